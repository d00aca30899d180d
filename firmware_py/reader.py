"""The assembled reader: the recognition core wired to its edge adapters.

This is the composition root, the one module that knows every package:

    camera -> RecognitionPipeline -> Decision
        -> GateController (direction -> durable signed punch -> door + LEDs)
        -> DecisionEvents (rejects, unknown faces, spoof attempts on the bus)
        -> console lines
    EventBus -> MQTT events / LEDs (offline) / console (punches)

The core (capture, vision, gallery, decision, pipeline) never imports
gpiozero, pyserial or paho; it is handed sinks, services and frame hooks here.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from firmware_py.compose.gate_edge import GateEdge
from firmware_py.compose.punch_path import PunchService
from firmware_py.config import Config, with_changes
from firmware_py.decision.ports import DecisionSink, Door
from firmware_py.decision.sinks import ConsoleSink
from firmware_py.events import Event, EventBus
from firmware_py.pipeline.build import ThresholdChoice, build_pipeline
from firmware_py.pipeline.daemon import Daemon
from firmware_py.pipeline.loop import FrameResult

log = logging.getLogger(__name__)

# How long "looking" stays lit after the last frame with a face.
LOOKING_HOLD_S = 0.5


class _LateDoor:
    """The door for the MQTT `door.open` command, bound once the gate exists (they need each other)."""

    def __init__(self) -> None:
        self.target: Door | None = None

    def grant(self, reason: str) -> None:
        if self.target is None:
            raise RuntimeError("the door is not ready yet")
        self.target.grant(reason)


class PunchPrinter:
    """Prints every durable punch on the console (the demo's 'punches visible on the console')."""

    def __init__(self, bus: EventBus, stream: IO[str] | None = None) -> None:
        self.stream = stream
        self._unsub = bus.subscribe(self._on_event, "punch.")

    def _on_event(self, event: Event) -> None:
        d = event.data
        out = self.stream or sys.stdout
        if event.type == "punch.recorded":
            when = time.strftime("%H:%M:%S", time.localtime(event.ts))
            line = f"{when}  PUNCH   {d.get('direction', '?'):<3} seq {d.get('seq')}  id {d.get('id')}  (signed, stored in the outbox)"
            print(line, file=out, flush=True)
        elif event.type == "punch.record_failed":
            print(f"PUNCH FAILED: {d.get('error')}", file=out, flush=True)

    def close(self) -> None:
        self._unsub()


class LookingLight:
    """Frame hook: shows "looking" while a face is tracked, back to idle when it leaves."""

    def __init__(self, feedback: Any) -> None:
        self.feedback = feedback
        self._showing = False
        self._last_face = 0.0
        self._lock = threading.Lock()

    def __call__(self, result: FrameResult) -> None:
        now = time.monotonic()
        with self._lock:
            if result.faces and not result.decisions:
                self._last_face = now
                if not self._showing:
                    self._showing = True
                    self.feedback.show("looking")
            elif self._showing and (result.decisions or now - self._last_face > LOOKING_HOLD_S):
                # A decision brings its own feedback (accepted / rejected); just stop claiming "looking".
                self._showing = False
                if not result.decisions:
                    self.feedback.show("idle")


class WatchdogHook:
    """Frame hook: readiness at the first processed frame, then a watchdog pet per frame."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._ready = False

    def __call__(self, result: FrameResult) -> None:
        if not self._ready:
            self._ready = True
            self.runtime.ready()
        self.runtime.frame_processed()


def link_state_to_leds(bus: EventBus, feedback: Any) -> Callable[[], None]:
    """Broker down -> "offline" (punches queued) until it is back."""

    def on_event(event: Event) -> None:
        if event.type == "link.offline":
            feedback.show("offline")
        elif event.type == "link.online" and hasattr(feedback, "clear"):
            feedback.clear("offline")

    return bus.subscribe(on_event, "link.")


@dataclass
class Reader:
    """Everything one reader runs; :meth:`run` drives it until stopped or the replay ends."""

    cfg: Config
    bus: EventBus
    daemon: Daemon
    threshold: ThresholdChoice
    punch: PunchService
    gate: GateEdge
    console: Any = None
    runtime: Any = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def run(self, max_frames: int | None = None) -> int:
        try:
            return self.daemon.run(max_frames=max_frames)
        finally:
            for close in self.closers:
                try:
                    close()
                except Exception:
                    log.exception("closing %r failed", close)


def build_reader(
    cfg: Config,
    *,
    config_path: str | None = None,
    store: Any = None,
    embedder: Any = None,
    extra_sinks: Iterable[DecisionSink] = (),
    console_out: IO[str] | None = None,
    pin_factory: Any = None,
    create_key: bool = True,
) -> Reader:
    """Build the whole reader from ``cfg``.

    ``create_key``: make the device key on first start when there is none
    (an existing key is never replaced).  ``pin_factory`` overrides
    ``[gpio] pin_factory`` (tests pass gpiozero's MockFactory).
    """
    from firmware_py.capture.factory import latest_frame_from_config
    from firmware_py.compose.fleet import build_fleet
    from firmware_py.mqtt.commands.builtin import RunningConfig
    from firmware_py.mqtt.event_catalogue import DecisionEvents
    from firmware_py.provision.console_enrol import enrol_command
    from firmware_py.serial.console import daemon_console
    from firmware_py.service.runtime import ServiceRuntime
    from firmware_py.telemetry.latency import StageTimes

    bus = EventBus()
    pipeline, choice = build_pipeline(cfg, bus=bus, store=store, embedder=embedder)
    running = RunningConfig(cfg, config_path)
    stage_times = StageTimes()
    camera = latest_frame_from_config(cfg, bus)
    door = _LateDoor()
    punch = PunchService.from_config(
        cfg,
        bus,
        door=door,
        config=running,
        create_key=create_key,
        pipeline=stage_times.snapshot,
        gallery=lambda: {"version": str(pipeline.gallery.gallery_version), "size": pipeline.gallery.persons, "templates": len(pipeline.gallery)},
        camera=lambda: {"state": getattr(camera, "state", "running")},
    )
    # Gallery sync, live enrolment, chunked transfers (firmware, snapshots): signed commands when MQTT is on.
    fleet = build_fleet(cfg, pipeline, bus, choice.value)
    if punch.commands is not None:
        fleet.register(punch.commands)
    gate = GateEdge.from_config(cfg, bus, punch.recorder, pin_factory=pin_factory)
    door.target = gate.door
    closers = [link_state_to_leds(bus, gate.feedback), PunchPrinter(bus, console_out).close, pipeline.close]

    def apply_config(new: Config, changes: dict[str, Any]) -> str | None:
        running.apply(new)
        return "applied; camera, model and pin changes take effect at the next restart"

    console = daemon_console(
        cfg,
        bus,
        get_config=lambda: running.current,
        apply_config=apply_config,
        status=punch.telemetry.snapshot,
        gallery_count=lambda: pipeline.gallery.persons,
        edge=gate,
    )

    def timing(result: FrameResult) -> None:
        stage_times.frame()
        for name, ms in result.stages_ms.items():
            stage_times.record(name, ms)
        if result.faces:
            stage_times.face(time.time())

    services: list[Any] = [punch, fleet.reporter, gate]  # the reporter's events go out through the started link
    if console is not None:
        console.registry.add(enrol_command(fleet.live))
        services.append(console)
    # sd_notify readiness and the watchdog, petted only while frames are processed.
    runtime = ServiceRuntime.from_config(cfg, bus)
    services.append(runtime)
    hooks: list[Callable[[FrameResult], None]] = [timing, LookingLight(gate.feedback), WatchdogHook(runtime)]
    hooks.append(fleet.live)
    sinks: list[DecisionSink] = [gate.controller, DecisionEvents(bus), ConsoleSink(console_out), *extra_sinks]
    daemon = Daemon(camera, pipeline, sinks, services, bus=bus, on_frame=hooks, decision_events=False)
    return Reader(cfg, bus, daemon, choice, punch, gate, console, runtime, closers)


DEMO_LIVENESS_OFF = "the demo's walk-up is synthesised from still photos, which is exactly what the liveness check must reject"


def demo_overrides(cfg: Config) -> Config:
    """The demo keeps everything local: mock pins, no broker, no serial console; liveness off (:data:`DEMO_LIVENESS_OFF`)."""
    return with_changes(
        cfg,
        {"gpio.pin_factory": "mock", "mqtt.enabled": False, "console.device": "", "card_reader.device": "", "liveness.policy": "off"},
    )
