"""Private key files: created once with mode 0600, never silently replaced.

A reader's punches are only as trustworthy as its key, so the file is
created atomically (written to a temporary file, synced, then hard-linked
into place, which fails if a key is already there) and a key readable by
other users is refused, as ssh does.  Replacing a key is an explicit act
(``replace=True``): the old key is kept beside the new one as
``<name>.retired-<UTC time>``, never deleted.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key

from firmware_py.fsutil import fsync_dir
from firmware_py.keys.jwk import KeyFileError, key_id

DEVICE_KEY_NAME = "device_ed25519.pem"
BACKEND_PUBLIC_NAME = "backend.jwk"
MAX_KEY_FILE_BYTES = 16 * 1024


class KeyExistsError(KeyFileError):
    """``init`` found a key already in place and was not told to replace it."""


@dataclass(frozen=True)
class KeyInfo:
    path: Path
    kid: str
    retired: Path | None = None  # where a replaced key was moved


def keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def device_key_path(data_dir: Path) -> Path:
    return keys_dir(data_dir) / DEVICE_KEY_NAME


def backend_public_path(data_dir: Path) -> Path:
    return keys_dir(data_dir) / BACKEND_PUBLIC_NAME


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data``; fail if it exists. Atomic and synced."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic and never overwrites, unlike rename
    finally:
        tmp.unlink()
    fsync_dir(path.parent)


def init_private_key(path: Path, *, replace: bool = False) -> KeyInfo:
    """Create a new Ed25519 key at ``path``.

    Raises :class:`KeyExistsError` when a key is there and ``replace`` is
    false; with ``replace`` the old key is renamed, not deleted.
    """
    retired = None
    if path.exists() or path.is_symlink():
        if not replace:
            kid = _kid_or_unreadable(path)
            raise KeyExistsError(
                f"a key already exists at {path} (kid {kid}); it was left untouched. "
                "Keep it, or replace it deliberately with --replace (the old key is kept as *.retired-*, "
                "and the backend must then register the new public key)"
            )
        retired = path.with_name(f"{path.name}.retired-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        os.rename(path, retired)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    write_private_file(path, pem)
    return KeyInfo(path, key_id(key), retired)


def _kid_or_unreadable(path: Path) -> str:
    try:
        return key_id(load_private_key(path, check_mode=False))
    except KeyFileError:
        return "unreadable"


def load_private_key(path: Path, *, check_mode: bool = True) -> Ed25519PrivateKey:
    """Load an Ed25519 private key (PKCS#8 PEM), refusing one that others can read."""
    where = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"no key at {where}; create one with `kaoclock keys init`") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the key {where}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{where} is not a regular file")
    if check_mode and st.st_mode & 0o077:
        raise KeyFileError(f"the key {where} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); fix: chmod 600 {where}")
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{where} is too large to be a key file")
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except PermissionError:
        raise KeyFileError(f"cannot read the key {where}: permission denied; run as the key's owner") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{where} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{where} holds a {type(key).__name__}, not an Ed25519 key")
    return key
