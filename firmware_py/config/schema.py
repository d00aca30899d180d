"""A small declarative schema for the TOML configuration.

Every package describes its own section as a frozen dataclass whose fields are
declared with :func:`setting` (type from the annotation, range, pattern, a
one-line doc).  :func:`parse_section` turns a raw TOML table into an instance
and collects *every* problem it finds, each naming the dotted key and a fix,
so a technician sees the whole list at once instead of one error per restart.

Supported annotations: ``bool``, ``int``, ``float``, ``str``, ``Path``,
``Literal[...]``, ``list[T]``, ``dict[str, T]``, ``T | None`` and nested
:class:`Section` subclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from firmware_py.errors import ExitCode, KaoclockError

_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration: where, what, and how to fix it."""

    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message} (fix: {self.fix})"


class ConfigError(KaoclockError):
    """A configuration was refused; ``problems`` lists every reason."""

    exit_code = ExitCode.USAGE

    def __init__(self, problems: Iterable[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"config {source}" if source else "config"
        lines = [f"{where} refused ({len(self.problems)} problem(s)):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def setting(
    default: Any = _MISSING,
    *,
    doc: str,
    default_factory: Any = _MISSING,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    pattern: str | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    fix: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare one configuration key.

    ``doc`` is shown in the generated example config and JSON Schema; ``fix``
    overrides the generic advice given when the value is refused; ``secret``
    keeps the value out of ``config get`` output.
    """
    meta = {
        "doc": doc,
        "ge": ge,
        "le": le,
        "gt": gt,
        "lt": lt,
        "pattern": pattern,
        "min_items": min_items,
        "max_items": max_items,
        "fix": fix,
        "secret": secret,
    }
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: _copy(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


class Section:
    """Base of every config section (a frozen dataclass).

    Override :meth:`check` for rules that span several keys; it returns
    problems whose keys are relative to the section (``"pins.relay"``).
    """

    def check(self) -> Iterable[Problem]:
        return ()


# ---------------------------------------------------------------- type names


def describe_type(tp: Any) -> str:
    """Human wording of an annotation, used in error messages."""
    origin = get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is Path:
        return "a path (string)"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {describe_type(get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    if _is_optional(tp):
        return describe_type(_strip_optional(tp))
    if isinstance(tp, type) and issubclass(tp, Section):
        return "a table"
    return str(tp)


def _is_optional(tp: Any) -> bool:
    origin = get_origin(tp)
    return origin in (typing.Union, types.UnionType) and type(None) in get_args(tp)


def _strip_optional(tp: Any) -> Any:
    args = [a for a in get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007 (built at run time)


# A TOML basic string may hold no raw control character: a newline written as is would end the string
# (and could smuggle in a table); every one is escaped.
_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_TOML_ESCAPES.get(ch) or (f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch) for ch in value) + '"'
    if isinstance(value, Path):
        return _toml_repr(str(value))
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_repr(v)}" for k, v in value.items()) + " }"
    return repr(value)


def _got(value: Any) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    shown = _toml_repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} {shown}"


# ---------------------------------------------------------------- validation


def _check_value(tp: Any, value: Any, key: str, meta: dict[str, Any]) -> tuple[Any, list[Problem]]:
    """Coerce ``value`` to ``tp``; return (converted, problems)."""
    fix_hint = meta.get("fix")

    def bad(message: str, fix: str) -> tuple[Any, list[Problem]]:
        return None, [Problem(key, message, fix_hint or fix)]

    if _is_optional(tp):
        return _check_value(_strip_optional(tp), value, key, meta)

    origin = get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, Section):
        if not isinstance(value, dict):
            return bad(f"expected a table, got {_got(value)}", f"write it as a [{key}] table")
        return parse_section(tp, value, key)

    if origin is Literal:
        choices = get_args(tp)
        if value not in choices or type(value) is not type(choices[0]):
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return bad(
                f"{_got(value)} is not allowed",
                f"{hint}use one of {', '.join(repr(c) for c in choices)}",
            )
        return value, []

    if origin is list:
        if not isinstance(value, list):
            return bad(f"expected {describe_type(tp)}, got {_got(value)}", "write it as [item, ...]")
        (inner,) = get_args(tp)
        out, problems = [], []
        for i, item in enumerate(value):
            conv, probs = _check_value(inner, item, f"{key}[{i}]", {"fix": fix_hint})
            out.append(conv)
            problems += probs
        n_min, n_max = meta.get("min_items"), meta.get("max_items")
        if n_min is not None and len(value) < n_min:
            problems.append(Problem(key, f"has {len(value)} item(s), needs at least {n_min}", fix_hint or f"give at least {n_min}"))
        if n_max is not None and len(value) > n_max:
            problems.append(Problem(key, f"has {len(value)} items, at most {n_max} allowed", fix_hint or f"give at most {n_max}"))
        if not problems:
            for i, item in enumerate(out):
                problems += _check_bounds(item, f"{key}[{i}]", meta)
        return out, problems

    if origin is dict:
        if not isinstance(value, dict):
            return bad(f"expected a table, got {_got(value)}", f"write it as a [{key}] table")
        _key_tp, val_tp = get_args(tp)
        out_d, problems = {}, []
        for k, item in value.items():
            conv, probs = _check_value(val_tp, item, f"{key}.{k}", {"fix": fix_hint})
            out_d[k] = conv
            problems += probs
            if not probs:
                problems += _check_bounds(conv, f"{key}.{k}", meta)
        return out_d, problems

    if tp is bool:
        if not isinstance(value, bool):
            return bad(f"expected true or false, got {_got(value)}", "write true or false without quotes")
        return value, []
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            unq = " without quotes" if isinstance(value, str) else ""
            return bad(f"expected an integer, got {_got(value)}", f"write a whole number{unq}")
        return value, _check_bounds(value, key, meta)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            unq = " without quotes" if isinstance(value, str) else ""
            return bad(f"expected a number, got {_got(value)}", f"write a number{unq}")
        if isinstance(value, float) and not math.isfinite(value):
            return bad(f"{value} is not a finite number", "write a finite number")
        return float(value), _check_bounds(float(value), key, meta)
    if tp is str:
        if not isinstance(value, str):
            return bad(f"expected a string, got {_got(value)}", 'put the value in double quotes: "..."')
        return value, _check_bounds(value, key, meta)
    if tp is Path:
        if not isinstance(value, str) or not value:
            return bad(f"expected a path, got {_got(value)}", 'write the path in double quotes: "/var/lib/..."')
        return Path(value).expanduser(), []
    raise TypeError(f"config schema: unsupported annotation {tp!r} at {key}")


def _check_bounds(value: Any, key: str, meta: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    fix = meta.get("fix")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ge, le, gt, lt = meta.get("ge"), meta.get("le"), meta.get("gt"), meta.get("lt")
        span = _span(ge, le, gt, lt)
        if ge is not None and value < ge:
            problems.append(Problem(key, f"{value} is below the minimum {ge}", fix or f"set a value {span}"))
        if le is not None and value > le:
            problems.append(Problem(key, f"{value} is above the maximum {le}", fix or f"set a value {span}"))
        if gt is not None and value <= gt:
            problems.append(Problem(key, f"{value} must be greater than {gt}", fix or f"set a value {span}"))
        if lt is not None and value >= lt:
            problems.append(Problem(key, f"{value} must be less than {lt}", fix or f"set a value {span}"))
    if isinstance(value, str) and meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        problems.append(Problem(key, f"{value!r} does not match the pattern {meta['pattern']}", fix or f"use a value matching {meta['pattern']}"))
    return problems


def _span(ge: Any, le: Any, gt: Any, lt: Any) -> str:
    lo = f">= {ge}" if ge is not None else (f"> {gt}" if gt is not None else None)
    hi = f"<= {le}" if le is not None else (f"< {lt}" if lt is not None else None)
    return " and ".join(x for x in (lo, hi) if x) or "in range"


def section_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    """The dataclass fields of a section with their resolved annotations."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def parse_section(cls: type, raw: dict[str, Any], prefix: str) -> tuple[Any, list[Problem]]:
    """Build ``cls`` from the TOML table ``raw``; collect every problem.

    ``prefix`` is the dotted key of the table (``""`` for the root), used to
    name keys in problems.  On problems the returned instance is ``None``.
    """
    instance, problems = _build_section(cls, raw, prefix)
    return (None, problems) if problems else (instance, [])


def _build_section(cls: type, raw: dict[str, Any], prefix: str) -> tuple[Any, list[Problem]]:
    """:func:`parse_section`, but on problems also a stand-in instance (or ``None``).

    A refused key is replaced by its default so the section's cross-key
    checks still run: a file with a bad width *and* a bad time zone gets both
    problems in one pass.  A check problem about a key already refused is
    dropped (it would judge the stand-in default, not the file).
    """
    problems: list[Problem] = []
    fields = section_fields(cls)
    known = {f.name for f, _ in fields}
    dotted = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)

    for name in raw:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean '{dotted(close[0])}'? " if close else ""
            where = f"[{prefix}]" if prefix else "the top level"
            problems.append(Problem(dotted(name), "unknown key", f"{hint}remove or rename it; keys allowed in {where}: {', '.join(sorted(known))}"))

    values: dict[str, Any] = {}
    buildable = True
    for f, tp in fields:
        if f.name in raw:
            if _is_section(tp) and isinstance(raw[f.name], dict):
                conv, probs = _build_section(_strip_optional(tp) if _is_optional(tp) else tp, raw[f.name], dotted(f.name))
            else:
                conv, probs = _check_value(tp, raw[f.name], dotted(f.name), dict(f.metadata))
            problems += probs
            if not probs or (conv is not None and _is_section(tp)):
                values[f.name] = conv
            elif f.default is not _MISSING:
                values[f.name] = f.default
            elif f.default_factory is not _MISSING:
                values[f.name] = f.default_factory()
            else:
                buildable = False
        elif f.default is _MISSING and f.default_factory is _MISSING:
            if isinstance(tp, type) and issubclass(tp, Section):
                conv, probs = _build_section(tp, {}, dotted(f.name))
                problems += probs
                values[f.name] = conv
                buildable = buildable and conv is not None
            else:
                problems.append(Problem(dotted(f.name), "is required", f"add {f.name} = {describe_type(tp)} to [{prefix or 'top level'}]"))
                buildable = False

    if not buildable:
        return None, problems
    instance = cls(**values)
    if isinstance(instance, Section):
        refused = [p.key for p in problems]
        for p in instance.check():
            key = dotted(p.key)
            if not any(key == r or key.startswith((r + ".", r + "[")) for r in refused):
                problems.append(Problem(key, p.message, p.fix))
    return instance, problems


def _is_section(tp: Any) -> bool:
    if _is_optional(tp):
        tp = _strip_optional(tp)
    return isinstance(tp, type) and issubclass(tp, Section)


def to_plain(obj: Any) -> Any:
    """A section as plain TOML-compatible data (Paths become strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if getattr(obj, f.name) is not None}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------- documentation


def json_schema(cls: type, title: str | None = None) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a section, for editors and the docs."""
    props: dict[str, Any] = {}
    required: list[str] = []
    for f, tp in section_fields(cls):
        props[f.name] = _json_type(tp, dict(f.metadata))
        if f.default is _MISSING and f.default_factory is _MISSING and not (isinstance(tp, type) and issubclass(tp, Section)):
            required.append(f.name)
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if title:
        out = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **out}
    if cls.__doc__:
        out["description"] = cls.__doc__.strip().splitlines()[0]
    if required:
        out["required"] = required
    return out


def _json_type(tp: Any, meta: dict[str, Any]) -> dict[str, Any]:
    if _is_optional(tp):
        tp = _strip_optional(tp)
    origin = get_origin(tp)
    out: dict[str, Any]
    if isinstance(tp, type) and issubclass(tp, Section):
        out = json_schema(tp)
    elif origin is Literal:
        out = {"enum": list(get_args(tp))}
    elif origin is list:
        out = {"type": "array", "items": _json_type(get_args(tp)[0], {k: meta.get(k) for k in ("ge", "le", "gt", "lt", "pattern")})}
        if meta.get("min_items") is not None:
            out["minItems"] = meta["min_items"]
        if meta.get("max_items") is not None:
            out["maxItems"] = meta["max_items"]
    elif origin is dict:
        out = {"type": "object", "additionalProperties": _json_type(get_args(tp)[1], {k: meta.get(k) for k in ("ge", "le", "gt", "lt", "pattern")})}
    else:
        out = {"type": {bool: "boolean", int: "integer", float: "number", str: "string", Path: "string"}[tp]}
    for m, j in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"), ("lt", "exclusiveMaximum"), ("pattern", "pattern")):
        if meta.get(m) is not None and origin not in (list, dict):
            out[j] = meta[m]
    if meta.get("doc"):
        out["description"] = meta["doc"]
    return out


def example_toml(cls: type, prefix: str = "") -> str:
    """A commented TOML document listing every key with its default."""
    lines: list[str] = []
    nested: list[tuple[str, type]] = []
    default = cls()
    for f, tp in section_fields(cls):
        sub = _strip_optional(tp) if _is_optional(tp) else tp
        if isinstance(sub, type) and issubclass(sub, Section):
            nested.append((f"{prefix}.{f.name}" if prefix else f.name, sub))
            continue
        doc = f.metadata.get("doc", "")
        for dl in _wrap(doc):
            lines.append(f"# {dl}")
        value = getattr(default, f.name)
        if sub is Path and f.default_factory is not _MISSING:
            # Machine-dependent default: show where it comes from, not this machine's path.
            origin = (getattr(f.default_factory, "__doc__", None) or "").strip().splitlines()
            lines.append(f'# {f.name} = "..."  (default: {origin[0] if origin else "computed at start"})')
        elif value is None:
            lines.append(f"# {f.name} = ...  ({describe_type(sub)}; unset by default)")
        else:
            lines.append(f"{f.name} = {_toml_repr(value)}")
        lines.append("")
    out = ""
    if prefix:
        head = (cls.__doc__ or "").strip().splitlines()
        out += (f"# {head[0]}\n" if head else "") + f"[{prefix}]\n"
    out += "\n".join(lines)
    for name, sub in nested:
        out += "\n" + example_toml(sub, name)
    return out


def _wrap(text: str, width: int = 76) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    if cur:
        lines.append(cur)
    return lines
