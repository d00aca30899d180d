"""Reading, validating and changing a configuration.

Start-up, `kaoclock config check`, the serial console's `config set` and the
backend's reload command all go through :func:`validate`, so a value refused
in one place is refused in all of them, and a refused change leaves the
running configuration untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
from pathlib import Path
from typing import Any

from firmware_py.config.model import Config
from firmware_py.config.schema import ConfigError, Problem, parse_section, section_fields, to_plain

MAX_CONFIG_BYTES = 1 << 20


def validate(raw: dict[str, Any], source: str | None = None) -> Config:
    """Build a :class:`Config` from parsed TOML or raise :class:`ConfigError`."""
    cfg, problems = parse_section(Config, raw, "")
    if problems:
        raise ConfigError(problems, source)
    return cfg


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(source, f"not valid TOML: {exc}", "fix the syntax at the line and column shown")], source) from None
    except RecursionError:  # e.g. an array nested 5,000 deep: an ordinary refusal, not a crash
        raise ConfigError([Problem(source, "is nested too deeply to be a kaoclock config", "give a kaoclock TOML config")], source) from None


def read_raw(path: Path) -> dict[str, Any]:
    """Parse a config file without validating it (the raw TOML tables)."""
    where = str(path)
    try:
        if path.is_dir():
            raise ConfigError([Problem(where, "is a directory, not a config file", "give the path of a .toml file")], where)
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError([Problem(where, "is larger than 1 MiB", "give a kaoclock TOML config, not another file")], where)
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem(where, "does not exist", "check the path, or create one with `kaoclock config example > FILE`")], where) from None
    except PermissionError:
        raise ConfigError(
            [Problem(where, "cannot be read (permission denied)", f"make it readable by this user: chmod o+r {where} or run as its owner")], where
        ) from None
    except OSError as exc:
        raise ConfigError([Problem(where, f"cannot be read: {exc.strerror}", "check the path and the disk")], where) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(where, f"is not UTF-8 text (byte {exc.start})", "save the file as UTF-8")], where) from None
    return parse_toml(text, where)


def load(path: Path | str | None) -> Config:
    """Load and validate a config file; ``None`` gives the embedded default."""
    if path is None:
        return Config()
    path = Path(path)
    return validate(read_raw(path), str(path))


def get_value(cfg: Config, key: str) -> Any:
    """The value at a dotted key (``camera.width``), as plain TOML data."""
    node: Any = to_plain(cfg)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            close = difflib.get_close_matches(key, sorted(all_keys(Config)), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError([Problem(key, "unknown key", f"{hint}list the keys with `kaoclock config example`")])
        node = node[part]
    return node


def all_keys(cls: Any, prefix: str = "") -> list[str]:
    """Every dotted key a config may set (tables too), e.g. ``camera`` and ``camera.width``."""
    keys: list[str] = []
    for f, tp in section_fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            keys += all_keys(tp, key + ".")
    return keys


def is_secret(key: str) -> bool:
    """Whether the dotted key is declared ``secret`` (never printed)."""
    cls: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        for f, tp in section_fields(cls):
            if f.name == part:
                if i == len(parts) - 1:
                    return bool(f.metadata.get("secret"))
                cls = tp
                break
        else:
            return False
    return False


def parse_value(text: str, key: str) -> Any:
    """A value typed by a person (``800``, ``true``, ``"x"``, ``[1, 2]``) as TOML data.

    A bare word that is not TOML (``passive``) is taken as a string so that a
    technician need not quote simple strings.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if text and "\n" not in text and '"' not in text:
            return text
        raise ConfigError([Problem(key, f"cannot read the value {text!r}", 'write a TOML value: 800, true, "text", [1, 2]')]) from None


def with_changes(cfg: Config, changes: dict[str, Any]) -> Config:
    """A new validated Config with dotted-key ``changes`` applied.

    Raises :class:`ConfigError` naming every refused key; ``cfg`` is never
    modified, so nothing is half-applied.
    """
    raw = copy.deepcopy(to_plain(cfg))
    problems: list[Problem] = []
    for key, value in changes.items():
        parts = key.split(".")
        node = raw
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                problems.append(Problem(key, f"'{part}' is a value, not a section", "set the key itself"))
                break
            node = nxt
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems)
    return validate(raw)
