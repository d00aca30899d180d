"""The assembled reader end to end: replayed walk-ups through the real front-end and int8
embedder, the gate on gpiozero's MockFactory, a signed punch made durable in the SQLite
outbox before the relay moves, and the contract's events for the rejects."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from firmware_py.config import load, with_changes
from firmware_py.events import Event


@pytest.fixture(scope="module")
def walkup(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    """Grace Hopper walks up, then the astronaut (not enrolled), then Grace Hopper again."""
    from firmware_py.demo import write_walkup
    from firmware_py.demo_assets import ensure_demo_assets
    from firmware_py.pipeline.build import build_analyzer

    folder = tmp_path_factory.mktemp("walkup")
    write_walkup(folder, ensure_demo_assets(models_dir), build_analyzer(load(None), enrolment=True))
    return folder


def test_accept_is_punched_durably_before_the_door_opens(walkup: Path, models_dir: Path, grace_hopper_path: Path, tmp_path: Path) -> None:
    from gpiozero.pins.mock import MockFactory
    from jwcrypto import jwk, jws

    from firmware_py.gallery.enrol import enrol_photos
    from firmware_py.gallery.store import open_from_config
    from firmware_py.keys.jwk import public_jwk
    from firmware_py.keys.store import device_key_path, load_private_key
    from firmware_py.pipeline.build import build_analyzer
    from firmware_py.reader import build_reader, demo_overrides
    from firmware_py.vision.embedding import load_embedder

    cfg = demo_overrides(
        with_changes(
            load(None),
            {
                "device.data_dir": str(tmp_path / "state"),
                "camera.source": str(walkup),
                "camera.replay_realtime": False,
                "camera.fps": 10.0,
                "decision.cooldown_s": 60.0,
            },
        )
    )
    embedder = load_embedder(cfg)
    factory = MockFactory()
    events: list[Event] = []
    out = io.StringIO()
    with open_from_config(cfg) as store:
        enrol_photos(store, build_analyzer(cfg, enrolment=True), embedder, "grace", "Grace Hopper", [cfg.device.site], [grace_hopper_path])
        reader = build_reader(cfg, store=store, embedder=embedder, pin_factory=factory, console_out=out)
        relay = reader.gate.devices.relay.pin
        relay.clear_states()
        # What the relay and the outbox look like at the moment the gate reports the punch stored.
        seen: list[tuple[bool, int]] = []
        reader.bus.subscribe(lambda e: seen.append((relay.state, reader.punch.outbox.depth())), "punch.recorded")
        reader.bus.subscribe(events.append)
        frames = reader.run()
        # The services are stopped now: reopen the outbox as a restarted reader would.
        from firmware_py.events import EventBus
        from firmware_py.outbox.store import Outbox

        outbox = Outbox.from_config(cfg, EventBus())
        pending = outbox.pending()
        outbox.close()
        key = load_private_key(device_key_path(cfg.device.data_dir))

    assert frames == 90
    types = [e.type for e in events]
    # One accept -> exactly one punch; the stranger and the second walk-up are rejects with reasons.
    assert types.count("punch.recorded") == 1 and types.count("gate.accepted") == 1, types
    assert "decision.unknown_face" in types
    assert "decision.accept" not in types  # whole decisions (with names) never go to the events topic
    # The punch was durable (in the outbox) while the relay was still closed.
    assert seen == [(False, 1)]
    pulses = [s for s in relay.states[1:] if s.state]
    assert len(pulses) == 1, relay.states
    accepted = next(e for e in events if e.type == "gate.accepted")
    recorded = next(e for e in events if e.type == "punch.recorded")
    assert accepted.data["punch_id"] == recorded.data["id"]

    # The stored punch is a JWS that an independent JOSE library verifies with the device's public key.
    assert len(pending) == 1
    token = pending[0].payload.decode()
    verifier = jws.JWS()
    verifier.deserialize(token)
    verifier.verify(jwk.JWK(**public_jwk(key)))
    claims = json.loads(verifier.payload)
    assert claims["person"] == "grace" and claims["direction"] == "in" and claims["seq"] == 1
    assert "PUNCH   in  seq 1" in out.getvalue() and "REJECT  unknown" in out.getvalue()


def test_stopping_the_reader_stops_the_liveness_worker(walkup: Path, tmp_path: Path) -> None:
    """With the default liveness (passive, the two nets side by side), a stopped reader leaves no net thread running."""
    import threading

    from gpiozero.pins.mock import MockFactory

    from firmware_py.reader import build_reader

    def net_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("minifasnet") and t.is_alive()]

    cfg = with_changes(
        load(None),
        {
            "device.data_dir": str(tmp_path / "state"),
            "camera.source": str(walkup),
            "camera.replay_realtime": False,
            "camera.fps": 10.0,
            "mqtt.enabled": False,
            "console.device": "",
            "card_reader.device": "",
        },
    )
    assert cfg.liveness.policy == "passive" and cfg.liveness.parallel_nets
    before = set(net_threads())
    reader = build_reader(cfg, pin_factory=MockFactory())
    stage = reader.daemon.pipeline.liveness
    assert reader.run(max_frames=12) == 12
    # The nets did run on the worker (a face was in view), and the worker is gone now.
    assert stage.learned is not None and stage.learned.invokes > 0
    assert not stage.learned.parallel and set(net_threads()) <= before
