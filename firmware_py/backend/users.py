"""HR users of the web page (`backend users add NAME`): a name and a salted scrypt hash of the password.

The hash is ``scrypt$<n>$<r>$<p>$<salt hex>$<key hex>`` (the standard
library's :func:`hashlib.scrypt`; the cost is stored with it, so it can be
raised later without breaking old hashes).  Nothing else about a user is kept:
the web page's corrections record the user's name as who made them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import time

from firmware_py.backend.db import Database
from firmware_py.errors import KaoclockError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MIN_PASSWORD = 10
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # about 32 MiB and 0.1 s a login: slow for a guesser, fine for HR
_MAXMEM = 64 * 1024 * 1024


class UserError(KaoclockError):
    """A refused user change (bad name, short password, unknown or existing user); nothing was changed."""

    exit_code = 4


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${key.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), maxmem=_MAXMEM, dklen=len(key) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), key)


def add_user(db: Database, name: str, password: str, *, replace: bool = False) -> bool:
    """Add a user (or set a new password with ``replace``); True when the user is new."""
    if not NAME_RE.fullmatch(name):
        raise UserError(f"user name {name!r} must be 1-64 letters, digits or _.@- (starting with a letter or digit)")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters; nothing was changed")
    exists = bool(db.query("SELECT 1 FROM web_users WHERE name = ?", (name,)))
    if exists and not replace:
        raise UserError(f"user {name!r} exists; use --replace to set a new password; nothing was changed")
    hashed = hash_password(password)
    with db.tx() as cur:
        cur.execute(
            "INSERT INTO web_users(name, password_hash, created) VALUES(?,?,?) ON CONFLICT (name) DO UPDATE SET password_hash=excluded.password_hash",
            (name, hashed, time.time()),
        )
    return not exists


def remove_user(db: Database, name: str) -> None:
    with db.tx() as cur:
        if cur.execute("DELETE FROM web_users WHERE name = ?", (name,)).rowcount != 1:
            raise UserError(f"no user {name!r}; see `kaoclock backend users list`")


def list_users(db: Database) -> list[str]:
    return [r[0] for r in db.query("SELECT name FROM web_users ORDER BY name")]


@functools.cache
def _dummy() -> str:
    return hash_password("not a password")


def authenticate(db: Database, name: str, password: str) -> bool:
    rows = db.query("SELECT password_hash FROM web_users WHERE name = ?", (name,))
    if not rows:
        check_password(password, _dummy())  # the same time for an unknown name as for a wrong password
        return False
    return check_password(password, rows[0][0])
