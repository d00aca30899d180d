"""What the daemon needs from the service manager, built from the config.

The daemon (``kaoclock run``) wires it like this::

    svc = ServiceRuntime.from_config(cfg, bus)
    configure_logging(cfg.logging.level, cfg.logging.format)   # journald fields under systemd
    svc.start()
    ... open the camera, load models, start the pipeline ...
    svc.ready("processing frames")        # READY=1: systemd considers the unit started
    for frame in frames:                  # in the pipeline
        ...
        svc.frame_processed()             # the watchdog is petted only while this keeps happening
    svc.stop()                            # STOPPING=1

Outside systemd (no ``$NOTIFY_SOCKET``) every call is harmless.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from firmware_py.events import EventBus
from firmware_py.service.heartbeat import Heartbeat, heartbeat_path
from firmware_py.service.notify import Notifier, watchdog_timeout
from firmware_py.service.watchdog import Watchdog

if TYPE_CHECKING:
    from firmware_py.config import Config


class ServiceRuntime:
    """Readiness, status and the frame-driven watchdog; an edge adapter with start()/stop()."""

    def __init__(self, notifier: Notifier, watchdog: Watchdog) -> None:
        self.notifier = notifier
        self.watchdog = watchdog

    @classmethod
    def from_config(cls, cfg: Config, bus: EventBus | None = None) -> ServiceRuntime:
        notifier = Notifier.from_env()
        heartbeat = Heartbeat(heartbeat_path(cfg.device.data_dir)) if cfg.service.heartbeat else None
        watchdog = Watchdog(notifier, watchdog_timeout(), cfg.service.frame_stall_seconds, heartbeat=heartbeat, bus=bus)
        return cls(notifier, watchdog)

    def start(self) -> None:
        self.watchdog.start()

    def ready(self, status: str = "processing frames") -> None:
        self.notifier.ready(status)

    def status(self, text: str) -> None:
        self.notifier.status(text)

    def frame_processed(self) -> None:
        self.watchdog.frame_processed()

    def stop(self, status: str = "stopping") -> None:
        self.notifier.stopping(status)
        self.watchdog.stop()
        self.notifier.close()
