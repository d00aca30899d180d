"""The console without the daemon: `kaoclock console --device DEV [--config FILE]`.

For a technician at a reader whose daemon is stopped (bring-up, diagnosis):
status from the config and the data directory, the recent log of this
process, relay / LED / buzzer tests on the real pins, and ``config set``
saved to the config file.  The daemon builds its own
:class:`ConsoleContext` with live status and the gallery.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from firmware_py import __version__
from firmware_py.config import Config, load
from firmware_py.errors import KaoclockError
from firmware_py.events import EventBus
from firmware_py.gate.card_store import CARD_DB, CardStore
from firmware_py.gpio.selftest import HardwareBench, buzzer_test, led_test
from firmware_py.serial.commands import ConsoleContext
from firmware_py.serial.config_file import save_changes
from firmware_py.serial.passphrase import PassphraseStore
from firmware_py.serial.ring_log import RingBufferHandler


class StandaloneContext:
    """Builds the :class:`ConsoleContext` for a config file (or the embedded default)."""

    def __init__(self, config_path: Path | None, bus: EventBus, ring: RingBufferHandler, pin_factory: Any = None) -> None:
        self.path = Path(config_path) if config_path else None
        self.cfg: Config = load(self.path)
        self.bus = bus
        self.ring = ring
        self._factory = pin_factory
        self._hw_lock = threading.Lock()  # one hardware test at a time
        self.started = time.time()

    def context(self) -> ConsoleContext:
        return ConsoleContext(
            version=__version__,
            get_config=lambda: self.cfg,
            apply_config=self.apply_config,
            status=self.status,
            gallery_count=None,
            log_lines=self.ring.lines,
            relay_test=self.relay_test,
            led_test=self.led_test,
            buzzer_test=self.buzzer_test,
        )

    def apply_config(self, new: Config, changes: dict[str, Any]) -> str:
        if self.path is None:
            raise KaoclockError("this console runs on the built-in default config; start it with --config FILE to save changes")
        self.cfg = save_changes(self.path, changes)
        return f"saved to {self.path} (previous file: {self.path.name}.bak); the daemon uses it after a restart"

    def status(self) -> dict[str, Any]:
        c = self.cfg
        data_dir = c.device.data_dir
        out: dict[str, Any] = {
            "device": {"id": c.device.id, "site": c.device.site, "timezone": c.device.timezone},
            "firmware": __version__,
            "config": str(self.path) if self.path else "built-in default",
            "mode": "standalone console (daemon not attached)",
            "gpio": {"pin_factory": c.gpio.pin_factory, "pinmap": c.gpio.pinmap},
            "door": {"lock": c.door.lock, "relay_active": c.door.relay_active, "pulse_s": c.door.pulse_s},
            "direction": c.direction.mode,
            "card_reader": {"device": c.card_reader.device or "none", "policy": c.card_reader.policy},
            "passphrase_set": PassphraseStore(data_dir).is_set(),
            "data_dir": str(data_dir),
        }
        if (data_dir / CARD_DB).exists():
            out["cards"] = CardStore(data_dir / CARD_DB).count()
        try:
            du = shutil.disk_usage(data_dir)
            out["disk_free_mb"] = du.free // (1 << 20)
        except OSError:
            out["disk_free_mb"] = "data dir missing"
        try:
            out["load"] = [round(x, 2) for x in os.getloadavg()]
            out["uptime_s"] = int(float(Path("/proc/uptime").read_text().split()[0]))
        except (OSError, ValueError):
            pass
        return out

    def _bench(self) -> HardwareBench:
        if not self._hw_lock.acquire(blocking=False):
            raise KaoclockError("another hardware test is running")
        bench = HardwareBench(self.cfg, self.bus, self._factory)
        try:
            bench.__enter__()
        except Exception:
            self._hw_lock.release()
            raise
        return bench

    def _done(self, bench: HardwareBench) -> None:
        try:
            bench.__exit__(None, None, None)
        finally:
            self._hw_lock.release()

    def relay_test(self, seconds: float) -> None:
        bench = self._bench()
        try:
            bench.relay_test(seconds)
        finally:
            self._done(bench)

    def led_test(self) -> Any:
        bench = self._bench()
        try:
            assert bench.feedback is not None
            yield from led_test(bench.feedback, 1.5)
        finally:
            self._done(bench)

    def buzzer_test(self) -> None:
        bench = self._bench()
        try:
            assert bench.feedback is not None
            buzzer_test(bench.feedback)
        finally:
            self._done(bench)
