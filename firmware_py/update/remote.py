"""Firmware updates that arrive over MQTT: the daemon's side of the hand-over to the updater.

:class:`FirmwareReceiver` is the ``firmware`` receiver of the signed chunked
transfer (:mod:`firmware_py.update.transfer`). When a transfer is
committed and its whole-file sha256 matched, it checks the bundle like the
updater will (Ed25519 signature over the manifest with ``[update]
public_key``, every file's hash, the size limits, not older than what runs),
so a forged or corrupted bundle is refused in the command's result and never
staged. A good one is renamed ``incoming/<id>.bundle`` and ``READY`` written:
``kaoclock-update.path`` starts ``kaoclock-update.service`` (root), which runs
``kaoclock update --staged``: install into the inactive slot, switch, restart,
health check, commit or roll back. The daemon never writes code itself.

The outcome: :class:`UpdateReporter` (a service the reader starts) reads the
updater's history at start and whenever it changes, and emits
``update.committed``, ``update.rolled_back`` or ``update.failed`` once for
each new entry.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_py import __version__
from firmware_py.events import EventBus
from firmware_py.fsutil import atomic_write_json
from firmware_py.mqtt.commands.registry import CommandRefused
from firmware_py.update.bundle import VERSION_PATTERN, Limits, verify_bundle, version_tuple
from firmware_py.update.errors import BundleError
from firmware_py.update.signing import TrustedKeys
from firmware_py.update.staging import READY, Staging
from firmware_py.update.state import StateFile

if TYPE_CHECKING:
    from firmware_py.config import Config

log = logging.getLogger(__name__)


def staging_dir(cfg: Config) -> Path:
    """Where the daemon stages transfers: ``<data dir>/update/incoming`` (the path unit watches its READY)."""
    return cfg.device.data_dir / "update" / "incoming"


class FirmwareReceiver:
    """Checks a transferred release bundle and stages it for ``kaoclock update --staged``."""

    kind = "firmware"

    def __init__(
        self, staging: Staging, public_key: Path, *, max_bytes: int = 512 << 20, running_version: str = __version__, bus: EventBus | None = None
    ) -> None:
        self.staging = staging
        self.public_key = Path(public_key)
        self.max_bytes = max_bytes
        self.running_version = running_version
        self.bus = bus or EventBus()

    @classmethod
    def from_config(cls, cfg: Config, staging: Staging, bus: EventBus | None = None) -> FirmwareReceiver:
        return cls(staging, cfg.update.public_key, max_bytes=cfg.update.max_bundle_mb << 20, bus=bus)

    def _trusted(self) -> TrustedKeys:
        try:
            return TrustedKeys.load(self.public_key)
        except BundleError as exc:
            raise CommandRefused("no_release_key", str(exc)) from None

    def _check_version(self, version: str) -> None:
        if version_tuple(version) < version_tuple(self.running_version):
            raise CommandRefused(
                "downgrade",
                f"release {version} is older than the running {self.running_version}; refused (an old, fixed flaw must not come back). "
                "Roll back on the reader with `kaoclock update --rollback`",
            )

    def check_begin(self, size: int, meta: dict[str, Any]) -> None:
        """Refuse before any chunk is sent: no release key, an update already waiting, an older version."""
        self._trusted()
        if (self.staging.dir / READY).exists():
            raise CommandRefused("busy", "a staged release is waiting for the updater; wait until it is installed (update.* events)")
        version = meta.get("version")
        if version is not None:
            if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
                raise CommandRefused("bad_args", "args.meta.version must be a release version such as 1.3.0")
            self._check_version(version)

    def accept(self, path: Path, transfer_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        try:
            vb = verify_bundle(path, self._trusted(), Limits(max_bytes=self.max_bytes))
        except BundleError as exc:
            raise CommandRefused("bad_bundle", f"{exc}. Nothing was installed") from None
        version = vb.manifest.version
        if meta.get("version") not in (None, version):
            raise CommandRefused(
                "bad_bundle", f"the transfer announced release {meta['version']}, the signed bundle is {version}. Nothing was installed"
            )
        self._check_version(version)
        try:
            self.staging.hand_over(path, transfer_id)
        except BundleError as exc:
            raise CommandRefused("busy", str(exc)) from None
        self.bus.emit_new("update.staged", "info", transfer_id=transfer_id, version=version, from_version=self.running_version, signer=vb.signer)
        log.warning("release %s staged for the updater (signed by %s)", version, vb.signer)
        return {"staged": True, "version": version, "from_version": self.running_version, "signer": vb.signer, "bundle_sha256": vb.sha256}


# The updater's history entries reported as events, with their severity.
REPORTED = {
    "committed": ("update.committed", "info"),
    "rolled-back": ("update.rolled_back", "fault"),
    "install-failed": ("update.failed", "fault"),
    "staged-refused": ("update.failed", "fault"),
    "rollback-by-hand": ("update.rolled_back", "warning"),
}


class UpdateReporter:
    """Emits the update outcomes recorded since the last start, at start and then as they are recorded (``start()`` / ``stop()``).

    The updater (root) writes ``<data dir>/update/state.json``; the daemon
    keeps the last entry it reported in ``<data dir>/update_reported.json``.
    On the very first start nothing old is reported. A rollback restarts the
    old release, whose start reports it; but a commit is decided while the
    new release already runs (the updater commits once its health check
    passed), and a staged bundle the updater refuses changes nothing that
    runs: so the state file is also looked at every ``poll_s`` seconds (a
    stat; read only when it changed), and the backend's rollout hears of
    the commit within that time.
    """

    def __init__(self, state_dir: Path, marker: Path, bus: EventBus, *, poll_s: float = 5.0) -> None:
        self.statefile = StateFile(state_dir)
        self.marker = marker
        self.bus = bus
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) of state.json when last read (it is replaced on every save)

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus) -> UpdateReporter:
        return cls(cfg.device.data_dir / "update", cfg.device.data_dir / "update_reported.json", bus)

    def start(self) -> None:
        self._safe_report()
        if self.poll_s > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="update-reporter", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _safe_report(self) -> None:
        try:
            self.report()
        except Exception:  # never stop the reader for a report
            log.exception("reporting update outcomes failed")

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                st = self.statefile.path.stat()
            except OSError:
                continue
            if (st.st_ino, st.st_mtime_ns, st.st_size) != self._seen:
                self._safe_report()

    def report(self) -> list[dict[str, Any]]:
        """Emit the new entries; returns them."""
        with self._lock:
            return self._report()

    def _report(self) -> list[dict[str, Any]]:
        try:
            st = self.statefile.path.stat()
        except OSError:
            return []
        self._seen = (st.st_ino, st.st_mtime_ns, st.st_size)  # before the read: a write after it is seen by the next poll
        history = self.statefile.load().history
        try:
            last = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            last = None
        if last is None:
            new: list[dict[str, Any]] = []
        elif last in history:
            new = history[history.index(last) + 1 :]
        else:  # the history moved on past what we saw: report the latest outcome only
            new = [h for h in history if h.get("event") in REPORTED][-1:]
        for h in new:
            kind = REPORTED.get(h.get("event", ""))
            if kind is not None:
                data = {k: v for k, v in h.items() if k not in ("event",)}
                self.bus.emit_new(kind[0], kind[1], **data)  # type: ignore[arg-type]
        if history and history[-1] != last:
            atomic_write_json(self.marker, history[-1])
        return [h for h in new if h.get("event") in REPORTED]
