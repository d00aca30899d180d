"""Saving a validated config change back to its TOML file, atomically.

Used by the standalone console (``kaoclock console --config FILE``): the
change has already passed :func:`firmware_py.config.with_changes`; the file
is re-read, the changed keys are set, the result validated once more,
rendered (control characters in strings escaped), parsed back and validated
again as parsed, and only then written to a temporary file that replaces the
original when complete (fsync, then rename).  The previous file is kept as ``FILE.bak``.  Keys the
file did not mention stay unmentioned; comments are not kept.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

from firmware_py.config import Config, ConfigError, validate
from firmware_py.config.loader import read_raw
from firmware_py.config.schema import Problem, _toml_repr
from firmware_py.fsutil import atomic_write_bytes


def dump_toml(data: dict[str, Any]) -> str:
    """Plain TOML data (tables, scalars, lists) as TOML text."""
    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_toml_repr(v)}")
        if scalars:
            lines.append("")
        for k, v in tables.items():
            table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)

    table("", data)
    return "\n".join(lines).rstrip() + "\n"


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() and k.isascii() else _toml_repr(k)


def _plain(value: Any) -> Any:
    """``value`` as TOML reads it back (paths are strings, tuples are lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def save_changes(path: Path, changes: dict[str, Any]) -> Config:
    """Set dotted-key ``changes`` (plain values) in the TOML file at ``path``; return the validated result."""
    path = Path(path)
    raw = read_raw(path) if path.exists() else {}
    for key, value in changes.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    validate(raw, str(path))  # raises ConfigError: the file is untouched
    text = "# kaoclock configuration (rewritten by the console's `config set`; the previous file is *.bak)\n" + dump_toml(raw)
    # Parse what would be written and validate *that*: the file must load as exactly what was checked.
    try:
        back = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("", f"the rewritten file would not parse ({exc})", "nothing was written; report this")]) from None
    if back != _plain(raw):
        raise ConfigError([Problem("", "the rewritten file would not read back as the values set", "nothing was written; report this")])
    cfg = validate(back, str(path))
    if path.exists():
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    atomic_write_bytes(path, text.encode("utf-8"))
    return cfg
