"""Provisioning one reader (AWS fleet provisioning's rule: the private key never leaves it).

Everything is checked before anything is written (config values, the backend
JWK, the passphrase), so a refused run changes nothing.  Then, in order:

1. the device key: created (mode 0600) when missing; an existing readable key
   is kept and reported; an unusable one (other users can read it, damaged)
   is refused with the reason: it is never replaced here (``keys init --replace``
   is the deliberate way);
2. the backend's command-signing public key, when given: installed; the same
   key again is a no-op; a different one is refused unless asked to replace it;
3. the technician passphrase, when given (scrypt-hashed by
   :class:`~firmware_py.serial.passphrase.PassphraseStore`);
4. the config: built with :func:`~firmware_py.config.with_changes` (so every
   refusal names its dotted key), written atomically; an identical existing
   file is left alone, a different one is refused unless ``force`` (then the
   old one is kept as ``FILE.bak``);
5. the registration message for the backend (``kaoclock backend devices add``):
   device, site, kid, public JWK, firmware and model versions; the public JWK is
   also written to ``<data_dir>/keys/device.jwk``.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_py import __version__
from firmware_py.config import Config, ConfigError, validate, with_changes
from firmware_py.config.loader import read_raw
from firmware_py.errors import ExitCode, KaoclockError, UsageError
from firmware_py.fsutil import atomic_write_bytes
from firmware_py.keys.jwk import KeyFileError, PublicKey, load_public_keys, public_jwk
from firmware_py.keys.store import backend_public_path, device_key_path, init_private_key, keys_dir, load_private_key, write_private_file
from firmware_py.serial.config_file import dump_toml
from firmware_py.serial.passphrase import MIN_LENGTH, PassphraseStore

REGISTRATION_TYPE = "kaoclock.registration"
PUBLIC_JWK_NAME = "device.jwk"
CONFIG_HEADER = "# kaoclock reader configuration (written by `kaoclock provision`; add any other key from device/kaoclock.example.toml)\n"


class ProvisionError(KaoclockError):
    """Provisioning refused: something already in place conflicts with the request."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class ProvisionRequest:
    device_id: str
    site: str
    brokers: list[str]
    config_out: Path
    data_dir: Path | None = None
    backend_jwk: Path | None = None
    passphrase: str | None = None
    force: bool = False  # replace a different existing config (kept as .bak)
    replace_backend_key: bool = False


@dataclass
class ProvisionResult:
    config: Config
    config_path: Path
    config_status: str  # written | unchanged | updated (keys added) | replaced (--force)
    key_path: Path
    key_status: str  # created | kept
    kid: str
    jwk: dict[str, str]
    backend_status: str  # installed | unchanged | replaced | not given
    passphrase_status: str  # set | not set (none before) | kept (one was set before)
    registration: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _nest(changes: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


def _get(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


_ABSENT = object()


def build_config(req: ProvisionRequest, existing: dict[str, Any] | None = None) -> tuple[Config, dict[str, Any], list[str]]:
    """The validated config, its TOML tables, and the keys on which ``existing`` says something else.

    The request's keys are merged into ``existing`` (e.g. the file device/install.sh
    wrote: data_dir, models, update paths), so nothing else in it is lost.
    """
    changes: dict[str, Any] = {"device.id": req.device_id, "device.site": req.site, "mqtt.enabled": True, "mqtt.brokers": list(req.brokers)}
    if req.data_dir is not None:
        changes["device.data_dir"] = str(Path(req.data_dir).expanduser().resolve())
    elif existing is None or _get(existing, "device.data_dir") is _ABSENT:
        # Pin the data directory in the file: the daemon must not depend on $KAOCLOCK_HOME at start-up.
        changes["device.data_dir"] = str(Config().device.data_dir)
    with_changes(Config(), changes)  # every refused value is named by its dotted key
    raw = copy.deepcopy(existing) if existing else {}
    conflicts = []
    for key, value in changes.items():
        old = _get(raw, key)
        if old is not _ABSENT and old != value:
            conflicts.append(f"{key} (is {old!r}, asked {value!r})")
    raw = _merge(raw, _nest(changes))
    return validate(raw, str(req.config_out)), raw, conflicts


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def _check_passphrase(text: str) -> None:
    if len(text) < MIN_LENGTH:
        raise UsageError(f"--passphrase-stdin: the technician passphrase needs at least {MIN_LENGTH} characters (got {len(text)})")
    if text != text.strip() or any(ord(c) < 0x20 for c in text):
        raise UsageError("--passphrase-stdin: the passphrase may not start or end with spaces or hold control characters")


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def _read_existing(path: Path, force: bool) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return read_raw(path)
    except ConfigError as exc:
        if force:
            return None
        raise ProvisionError(f"the existing config {path} cannot be read ({exc}); it was left untouched. Fix it, or --force to replace it") from None


def _config_plan(path: Path, existing: dict[str, Any] | None, raw: dict[str, Any], conflicts: list[str], force: bool) -> str:
    if not path.exists():
        return "written"
    if existing == raw:
        return "unchanged"
    if conflicts and not force:
        raise ProvisionError(
            f"the config {path} already says otherwise for {'; '.join(conflicts)}; it was left untouched. "
            f"Give another --config-out, or --force to change it (the old file is kept as {path.name}.bak)"
        )
    return "replaced" if conflicts or existing is None else "updated"


def _backend_plan(dest: Path, keys: dict[str, PublicKey], replace: bool) -> str:
    if not dest.exists():
        return "installed"
    try:
        current = load_public_keys(dest)
    except KeyFileError:
        current = {}
    if set(current) == set(keys):
        return "unchanged"
    if not replace:
        raise ProvisionError(
            f"another backend key ({', '.join(sorted(current)) or 'unreadable'}) is installed at {dest}; it was left untouched. "
            "Use --replace-backend-key to trust the new one instead"
        )
    return "replaced"


def _existing_key(path: Path) -> str | None:
    """The kid of a usable existing key, None when there is none; raises when one is there but unusable."""
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        return public_jwk(load_private_key(path))["kid"]
    except KeyFileError as exc:
        raise ProvisionError(
            f"a device key is already at {path} but cannot be used: {exc}. It was left untouched; "
            "fix it, or replace it deliberately with `kaoclock keys init --replace`"
        ) from None


def registration_message(cfg: Config, jwk: dict[str, str]) -> dict[str, Any]:
    """What the backend needs to accept this reader's punches (and whom to send commands to)."""
    from firmware_py.telemetry.collector import manifest_model_versions

    try:
        models = manifest_model_versions()
    except KaoclockError as exc:
        models = {"unavailable": str(exc)}
    return {
        "type": REGISTRATION_TYPE,
        "v": 1,
        "device": cfg.device.id,
        "site": cfg.device.site,
        "kid": jwk["kid"],
        "jwk": jwk,
        "firmware": __version__,
        "models": models,
        "brokers": list(cfg.mqtt.brokers),
    }


def provision(req: ProvisionRequest) -> ProvisionResult:
    """Provision the reader described by ``req``; see the module docstring for the order and the refusals."""
    config_path = Path(req.config_out)
    existing = _read_existing(config_path, req.force)
    cfg, raw, conflicts = build_config(req, existing)
    data_dir = cfg.device.data_dir
    key_path = cfg.punch.key_file or device_key_path(data_dir)
    backend_dest = cfg.mqtt.backend_key_file or backend_public_path(data_dir)

    # Check everything first: a refused run leaves the reader as it was.
    backend_keys: dict[str, PublicKey] | None = None
    if req.backend_jwk is not None:
        backend_keys = load_public_keys(Path(req.backend_jwk))
    if req.passphrase is not None:
        _check_passphrase(req.passphrase)
    kid = _existing_key(key_path)
    config_status = _config_plan(config_path, existing, raw, conflicts, req.force)
    backend_status = _backend_plan(backend_dest, backend_keys, req.replace_backend_key) if backend_keys is not None else "not given"
    if config_path.resolve().is_relative_to(keys_dir(data_dir).resolve()):
        raise ProvisionError(f"--config-out {config_path} is inside the keys directory; write the config elsewhere")

    notes: list[str] = []
    if kid is None:
        info = init_private_key(key_path)
        kid, key_status = info.kid, "created"
    else:
        key_status = "kept"
        notes.append(f"the existing device key {key_path} (kid {kid}) was kept")
    jwk = public_jwk(load_private_key(key_path))
    _write_atomic(keys_dir(data_dir) / PUBLIC_JWK_NAME, json.dumps(jwk, indent=2) + "\n")

    if backend_keys is not None and backend_status != "unchanged":
        if backend_dest.exists():
            backend_dest.unlink()
        jwks = {"keys": [dict(k.jwk) | {"kid": k.kid} for k in backend_keys.values()]}
        write_private_file(backend_dest, (json.dumps(jwks, indent=2) + "\n").encode())
        backend_dest.chmod(0o644)

    store = PassphraseStore(data_dir)
    if req.passphrase is not None:
        store.set(req.passphrase)
        passphrase_status = "set"
    elif store.is_set():
        passphrase_status = "kept"
    else:
        passphrase_status = "not set"
        notes.append("no technician passphrase is set: the serial console stays locked until one is (`kaoclock console set-passphrase`)")

    if config_status != "unchanged":
        if config_path.exists():
            shutil.copy2(config_path, config_path.with_name(config_path.name + ".bak"))
        _write_atomic(config_path, CONFIG_HEADER + dump_toml(raw))
    else:
        notes.append(f"the config {config_path} already says this; left as it was")
    reg = registration_message(cfg, jwk)
    _write_atomic(data_dir / "registration.json", json.dumps(reg, indent=2) + "\n")
    return ProvisionResult(cfg, config_path, config_status, key_path, key_status, kid, jwk, backend_status, passphrase_status, reg, notes)
