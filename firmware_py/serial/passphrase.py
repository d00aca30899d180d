"""The technician passphrase: stored hashed, checked slowly, guessed rarely.

Stored as scrypt (RFC 7914, from :mod:`hashlib`) with a random 16-byte salt
in ``<data_dir>/console/passphrase.json`` (mode 0600); the passphrase itself
is never written anywhere.  :class:`LoginLimiter` spaces out wrong guesses
(the wait doubles with each one) and locks the console after
``max_failures``; its state survives a restart, so power-cycling the reader
does not buy an attacker fresh guesses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from firmware_py.errors import KaoclockError, UsageError
from firmware_py.fsutil import atomic_write_bytes

MIN_LENGTH = 10
# scrypt cost: 16 MiB and about 50-100 ms on a Pi 4; slow enough to make an offline guess expensive.
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class PassphraseError(KaoclockError):
    """The stored passphrase cannot be used (missing or damaged)."""


def console_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "console"


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _hash(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


class PassphraseStore:
    """The hashed technician passphrase of one reader."""

    def __init__(self, data_dir: Path) -> None:
        self.path = console_dir(data_dir) / "passphrase.json"

    def is_set(self) -> bool:
        return self.path.is_file()

    def set(self, passphrase: str) -> None:
        """Hash and store ``passphrase`` (atomically; replaces any previous one)."""
        if len(passphrase) < MIN_LENGTH:
            raise UsageError(f"the technician passphrase needs at least {MIN_LENGTH} characters (got {len(passphrase)})")
        if passphrase != passphrase.strip() or any(ord(c) < 0x20 for c in passphrase):
            raise UsageError("the technician passphrase may not start or end with spaces or hold control characters")
        salt = secrets.token_bytes(16)
        record = {"kdf": "scrypt", **SCRYPT, "salt": _b64(salt), "hash": _b64(_hash(passphrase, salt, **SCRYPT)), "set_at": int(time.time())}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_bytes(self.path, json.dumps(record).encode(), 0o600)

    def verify(self, passphrase: str) -> bool:
        """True when ``passphrase`` is the stored one; raises :class:`PassphraseError` if none is usable."""
        try:
            rec = json.loads(self.path.read_text())
            salt = base64.b64decode(rec["salt"], validate=True)
            want = base64.b64decode(rec["hash"], validate=True)
            n, r, p = int(rec["n"]), int(rec["r"]), int(rec["p"])
            if rec.get("kdf") != "scrypt" or len(want) != 32:
                raise ValueError("unknown format")
        except FileNotFoundError:
            raise PassphraseError("no technician passphrase is set on this reader (set one with `kaoclock console set-passphrase`)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PassphraseError(f"{self.path} is damaged ({exc}); set the passphrase again with `kaoclock console set-passphrase`") from None
        return hmac.compare_digest(_hash(passphrase, salt, n, r, p), want)


@dataclass
class Verdict:
    allowed: bool
    wait_s: float = 0.0
    locked: bool = False


class LoginLimiter:
    """Exponential delay between wrong passphrases, then a lockout; persisted in the data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        first_delay_s: float = 2.0,
        max_failures: int = 5,
        lockout_s: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = console_dir(data_dir) / "login_state.json"
        self.first_delay_s = first_delay_s
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._clock = clock
        self.failures = 0
        self.next_try_at = 0.0
        self.locked_until = 0.0
        self._load()

    def _load(self) -> None:
        try:
            st = json.loads(self.path.read_text())
            self.failures = int(st["failures"])
            self.next_try_at = float(st["next_try_at"])
            self.locked_until = float(st["locked_until"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or damaged: start clean (a damaged file must not lock technicians out forever)
        # A clock that jumped back must not stretch a lockout beyond its length.
        now = self._clock()
        self.locked_until = min(self.locked_until, now + self.lockout_s)
        self.next_try_at = min(self.next_try_at, now + self._delay(self.max_failures))

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = {"failures": self.failures, "next_try_at": self.next_try_at, "locked_until": self.locked_until}
        atomic_write_bytes(self.path, json.dumps(state).encode(), 0o600)

    def _delay(self, failures: int) -> float:
        return self.first_delay_s * 2 ** max(failures - 1, 0)

    def check(self) -> Verdict:
        """May a passphrase be tried now?"""
        now = self._clock()
        if now < self.locked_until:
            return Verdict(False, self.locked_until - now, locked=True)
        if self.locked_until and now >= self.locked_until:
            self.failures, self.locked_until = 0, 0.0  # the lockout has been served
            self._save()
        if now < self.next_try_at:
            return Verdict(False, self.next_try_at - now)
        return Verdict(True)

    def failed(self) -> Verdict:
        """Record a wrong passphrase; the verdict says how long until the next try and whether it locked."""
        now = self._clock()
        self.failures += 1
        if self.failures >= self.max_failures:
            self.locked_until = now + self.lockout_s
            self.next_try_at = self.locked_until
            self._save()
            return Verdict(False, self.lockout_s, locked=True)
        delay = self._delay(self.failures)
        self.next_try_at = now + delay
        self._save()
        return Verdict(False, delay)

    def succeeded(self) -> None:
        if self.failures or self.next_try_at or self.locked_until:
            self.failures, self.next_try_at, self.locked_until = 0, 0.0, 0.0
            self._save()
