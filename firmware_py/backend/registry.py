"""Registered device keys: ``<devices_dir>/<site>/<device>.jwk`` (a JWK, or a JWK Set during key rotation).

A key is trusted only for the device it is filed under: a punch claiming
device B but signed with device A's key is refused (``wrong_device``), so a
compromised reader cannot punch for another one.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_py.keys.jwk import KeyFileError, PublicKey, load_public_keys, parse_public_jwk

if TYPE_CHECKING:
    from firmware_py.backend.db import Database

log = logging.getLogger(__name__)

ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class DeviceKey:
    site: str
    device: str
    key: PublicKey


class _KeyIndex:
    """The kid -> device index both registries keep, rescanned from their source when a kid is not found."""

    def __init__(self, rescan_s: float) -> None:
        self.rescan_s = rescan_s
        self._by_kid: dict[str, DeviceKey] = {}
        self._scanned = -1e9
        self._lock = threading.Lock()
        self.problems: list[str] = []
        self.scan()

    def scan(self) -> None:
        raise NotImplementedError

    def lookup(self, kid: str) -> DeviceKey | None:
        with self._lock:
            found = self._by_kid.get(kid)
            stale = time.monotonic() - self._scanned >= self.rescan_s
        if found is None and stale:
            self.scan()
            with self._lock:
                found = self._by_kid.get(kid)
        return found

    def devices(self) -> list[DeviceKey]:
        with self._lock:
            return sorted(self._by_kid.values(), key=lambda d: (d.site, d.device, d.key.kid))


def _checked_key(site: str, device: str, jwk: dict[str, Any]) -> PublicKey:
    for what, value in (("site", site), ("device", device)):
        if not ID_RE.fullmatch(value):
            raise KeyFileError(f"{what} {value!r} must be lowercase letters, digits and '-' (as in the device's config)")
    return parse_public_jwk(jwk, f"key for {site}/{device}")


class DeviceRegistry(_KeyIndex):
    """Device public keys by ``kid``, re-scanned (at most once a second) when an unknown kid shows up."""

    def __init__(self, directory: Path, rescan_s: float = 1.0) -> None:
        self.dir = Path(directory)
        super().__init__(rescan_s)

    def scan(self) -> None:
        by_kid: dict[str, DeviceKey] = {}
        problems: list[str] = []
        for path in sorted(self.dir.glob("*/*.jwk")):
            site, device = path.parent.name, path.stem
            if not (ID_RE.fullmatch(site) and ID_RE.fullmatch(device)):
                problems.append(f"{path}: site/device names must be lowercase letters, digits and '-'")
                continue
            try:
                keys = load_public_keys(path)
            except KeyFileError as exc:
                problems.append(str(exc))
                continue
            for kid, key in keys.items():
                other = by_kid.get(kid)
                if other is not None:
                    problems.append(f"{path}: key {kid} is also registered for {other.site}/{other.device}; ignored here")
                    continue
                by_kid[kid] = DeviceKey(site, device, key)
        for p in problems:
            log.error("device registry: %s", p)
        with self._lock:
            self._by_kid = by_kid
            self.problems = problems
            self._scanned = time.monotonic()

    def add(self, site: str, device: str, jwk: dict[str, Any], *, replace: bool = False) -> Path:
        """Register ``jwk`` for site/device; refuses to overwrite another key unless ``replace``."""
        key = _checked_key(site, device, jwk)
        existing = self.lookup(key.kid)
        if existing is not None and (existing.site, existing.device) != (site, device):
            raise KeyFileError(f"key {key.kid} is already registered for {existing.site}/{existing.device}")
        path = self.dir / site / f"{device}.jwk"
        if path.exists() and not replace:
            current = load_public_keys(path)
            if key.kid in current:
                return path
            raise KeyFileError(f"{path} already holds another key ({', '.join(current)}); use --replace to swap it (key rotation)")
        path.parent.mkdir(parents=True, exist_ok=True)
        public = {k: jwk[k] for k in ("kty", "crv", "x")} | {"kid": key.kid, "alg": "EdDSA", "use": "sig"}
        tmp = path.with_suffix(".jwk.tmp")
        tmp.write_text(json.dumps(public, indent=2) + "\n")
        tmp.replace(path)
        self.scan()
        return path


class DbDeviceRegistry(_KeyIndex):
    """The device registry in the backend database (table ``devices``), shared by every consumer host.

    Same interface as :class:`DeviceRegistry`; a device's site is recorded in
    ``sites`` too, so the HR master can assign people to it.  An unknown
    ``kid`` re-reads the table (at most once per ``rescan_s``), so a reader
    registered on one host is accepted by every consumer without a restart.
    """

    def __init__(self, db: Database, rescan_s: float = 1.0) -> None:
        self.db = db
        super().__init__(rescan_s)

    def scan(self) -> None:
        by_kid: dict[str, DeviceKey] = {}
        problems: list[str] = []
        for kid, site, device, text in self.db.query("SELECT kid, site, device, jwk FROM devices ORDER BY site, device, kid"):
            try:
                key = parse_public_jwk(json.loads(text), f"key for {site}/{device}")
            except (KeyFileError, ValueError) as exc:
                problems.append(f"{site}/{device}: {exc}")
                continue
            by_kid[kid] = DeviceKey(site, device, key)
        with self._lock:
            self._by_kid, self.problems, self._scanned = by_kid, problems, time.monotonic()

    def add(self, site: str, device: str, jwk: dict[str, Any], *, replace: bool = False) -> str:
        """Register ``jwk`` for site/device; refuses another device's key, or a second key unless ``replace`` (rotation)."""
        key = _checked_key(site, device, jwk)
        public = {k: jwk[k] for k in ("kty", "crv", "x")} | {"kid": key.kid, "alg": "EdDSA", "use": "sig"}
        with self.db.tx() as cur:
            row = cur.execute("SELECT site, device FROM devices WHERE kid=?", (key.kid,)).fetchone()
            if row is not None:
                if (row[0], row[1]) != (site, device):
                    raise KeyFileError(f"key {key.kid} is already registered for {row[0]}/{row[1]}")
                return key.kid
            current = [r[0] for r in cur.execute("SELECT kid FROM devices WHERE site=? AND device=?", (site, device)).fetchall()]
            if current and not replace:
                raise KeyFileError(f"{site}/{device} already has another key ({', '.join(current)}); use --replace to swap it (key rotation)")
            cur.execute("DELETE FROM devices WHERE site=? AND device=?", (site, device))
            cur.execute("INSERT INTO sites(site, added) VALUES(?,?) ON CONFLICT (site) DO NOTHING", (site, time.time()))
            cur.execute(
                "INSERT INTO devices(kid, site, device, jwk, added) VALUES(?,?,?,?,?)", (key.kid, site, device, json.dumps(public), time.time())
            )
        self.scan()
        return key.kid

    def import_dir(self, directory: Path) -> list[str]:
        """Register the JWK files of a file registry (``<dir>/<site>/<device>.jwk``) for devices the database does not know.

        A device already in the database keeps its key (it may have been rotated since).
        """
        known = {(r[0], r[1]) for r in self.db.query("SELECT site, device FROM devices")}
        added = []
        for d in DeviceRegistry(directory).devices():
            if (d.site, d.device) not in known and self.lookup(d.key.kid) is None:
                self.add(d.site, d.device, dict(d.key.jwk))
                known.add((d.site, d.device))
                added.append(f"{d.site}/{d.device}")
        return added
