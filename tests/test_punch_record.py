"""Punches: UUIDv7 ids, claims from a Decision, EdDSA JWS that independent JOSE libraries verify, gap-free sequence across restarts."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import pytest
from jwcrypto import jwk as jc_jwk
from jwcrypto import jws as jc_jws

from firmware_py.cli.main import main
from firmware_py.compose.punch_path import recorder_from_config
from firmware_py.decision.outcome import Decision, LivenessVerdict
from firmware_py.events import EventBus
from firmware_py.keys.jwk import load_public_keys
from firmware_py.keys.jws import PUNCH_TYP, JwsError, peek, verify
from firmware_py.keys.store import device_key_path, load_private_key
from firmware_py.outbox.store import Outbox
from firmware_py.paths import MQTT_CONTRACT
from firmware_py.punch.claims import claims_problem
from firmware_py.punch.ids import uuid7, uuid7_ms
from firmware_py.punch.recorder import PunchError, SignedPunchRecorder

SCHEMAS = MQTT_CONTRACT / "schemas"


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()))


def accepted(person: str = "emp-0042", ts: float = 1767225600.123) -> Decision:
    return Decision(
        accepted=True,
        reason="match",
        track_id=7,
        person_id=person,
        person_name="Grace Hopper",
        distance=0.412,
        threshold=0.55,
        margin=0.13,
        frames=5,
        liveness=LivenessVerdict("passive", True, 0.93, 0.5, {"blink": 1.0}, "blinked"),
        model_versions={"embedder": "dlib-int8-1", "detector": "blazeface-0.6"},
        detail="matched",
        ts=ts,
    )


def test_uuid7_is_versioned_time_ordered_and_unique() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    same_ms = [uuid7(now_ms=1_700_000_000_000) for _ in range(100)]
    assert same_ms == sorted(same_ms) and all(uuid7_ms(u) >= 1_700_000_000_000 for u in same_ms)


@pytest.fixture
def device(_isolated_home: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    """A device key made by the CLI, and its public JWK exactly as `keys export --jwk` prints it."""
    assert main(["keys", "init"]) == 0
    assert main(["keys", "export", "--jwk"]) == 0
    jwk = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    return {"key": load_private_key(device_key_path(_isolated_home)), "jwk": jwk, "home": _isolated_home}


def test_punch_from_the_broker_verifies_with_pyjwt_and_jwcrypto(device: dict, mosquitto: Any) -> None:
    from firmware_py.config import load, with_changes
    from firmware_py.devtools.broker import Capture
    from firmware_py.mqtt.device_link import DeviceLink

    cfg = with_changes(
        load(None),
        {
            "device.data_dir": str(device["home"]),
            "device.site": "site-a",
            "device.id": "reader-1",
            "mqtt.enabled": True,
            "mqtt.brokers": [mosquitto.url],
        },
    )
    bus = EventBus()
    outbox = Outbox.from_config(cfg, bus)
    rec = SignedPunchRecorder(outbox, device["key"], site="site-a", device="reader-1", clock_synced=lambda: True, timezone="Asia/Tokyo")
    pid = rec.record(accepted(), "in")
    cap = Capture(mosquitto.url, "kaoclock/v1/+/+/punch")
    link = DeviceLink.from_config(cfg, bus, outbox=outbox)
    link.start()
    try:
        ((topic, payload, _retain),) = cap.wait_for(lambda m: len(m) >= 1)
    finally:
        link.stop()
        cap.close()
    assert topic == "kaoclock/v1/site-a/reader-1/punch"
    token = payload.decode()  # exactly what a backend receives

    # PyJWT, given only the JWK printed by `kaoclock keys export --jwk`
    claims = jwt.decode(token, key=jwt.PyJWK(device["jwk"]), algorithms=["EdDSA"])
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "kid": device["jwk"]["kid"], "typ": PUNCH_TYP}
    # jwcrypto, given only the same JWK
    obj = jc_jws.JWS()
    obj.deserialize(token)
    obj.verify(jc_jwk.JWK(**device["jwk"]))
    assert json.loads(obj.payload) == claims

    assert claims["id"] == pid and claims["seq"] == 1
    assert claims["ts"] == "2026-01-01T00:00:00.123Z" and claims["tz"] == "Asia/Tokyo"
    assert claims["person"] == "emp-0042" and claims["direction"] == "in" and claims["method"] == "face"
    assert claims["match"] == {"distance": 0.412, "threshold": 0.55, "margin": 0.13, "frames": 5}
    assert claims["liveness"] == {"policy": "passive", "passed": True, "score": 0.93, "threshold": 0.5}
    assert claims["models"] == {"embedder": "dlib-int8-1", "detector": "blazeface-0.6"}
    assert claims["clock_synced"] is True
    # The name, the liveness cues and anything image-like stay on the device.
    assert "Grace" not in json.dumps(claims) and "blink" not in json.dumps(claims)
    schema("punch-claims.schema.json").validate(claims)
    schema("jws-header.schema.json").validate(header)
    assert claims_problem(claims) is None

    # A tampered token fails in the independent library too.
    h, _p, s = token.split(".")
    forged = jwt.api_jws.PyJWS().encode(json.dumps(claims | {"person": "emp-9999"}).encode(), key=None, algorithm="none")
    with pytest.raises(jwt.InvalidTokenError):
        jwt.decode(h + "." + forged.split(".")[1] + "." + s, key=jwt.PyJWK(device["jwk"]), algorithms=["EdDSA"])


def test_own_verifier_refuses_each_kind_of_bad_token(device: dict, tmp_path: Path) -> None:
    f = tmp_path / "dev.jwk"
    f.write_text(json.dumps(device["jwk"]))
    keys = load_public_keys(f)
    outbox = Outbox(tmp_path / "o.sqlite")
    SignedPunchRecorder(outbox, device["key"], site="s", device="d").record(accepted(), "out")
    token = outbox.pending()[0].payload.decode()
    assert verify(token, keys, PUNCH_TYP).claims["direction"] == "out"
    h, p, s = token.split(".")
    cases = {
        "malformed": ["garbage", h + "." + p, "!!." + p + "." + s],
        "unsigned": [h + "." + p + "."],
        "bad_signature": [h + "." + p + "." + s[:-4] + ("AAAA" if not s.endswith("AAAA") else "BBBB")],
        "wrong_type": [token],  # checked against the command typ below
    }
    for reason, tokens in cases.items():
        for t in tokens:
            with pytest.raises(JwsError) as exc:
                verify(t, keys, "kaoclock-command+jwt" if reason == "wrong_type" else PUNCH_TYP)
            assert exc.value.reason == reason, (reason, t[:30])
    with pytest.raises(JwsError) as exc:
        verify(token, {}, PUNCH_TYP)
    assert exc.value.reason == "unknown_key"
    none_token = jwt.encode({"a": 1}, key=None, algorithm="none")
    with pytest.raises(JwsError) as exc:
        verify(none_token, keys, PUNCH_TYP)
    assert exc.value.reason == "unsigned"
    assert peek(token)[1]["device"] == "d"


def test_sequence_survives_restart_without_gaps(device: dict, tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    outbox = Outbox(path)
    rec = SignedPunchRecorder(outbox, device["key"], site="s", device="d")
    for _ in range(3):
        rec.record(accepted(), "in")
    outbox.mark_delivered([m.seq for m in outbox.pending()])  # delivered punches leave the table ...
    outbox.close()
    outbox = Outbox(path)  # ... and the sequence still continues after a restart
    rec = SignedPunchRecorder(outbox, device["key"], site="s", device="d")
    with pytest.raises(PunchError):
        rec.record(Decision(False, "unknown", 1), "in")  # a refused punch consumes no number
    with pytest.raises(PunchError):
        rec.record(accepted(), "sideways")  # type: ignore[arg-type]
    rec.record(accepted(), "out")
    (msg,) = outbox.pending()
    assert peek(msg.payload)[1]["seq"] == 4
    assert outbox.counter("punch_seq") == 4


def test_recorder_from_config_and_events(device: dict) -> None:
    from firmware_py.config import load, with_changes

    cfg = with_changes(load(None), {"device.site": "hq", "device.id": "gate-2", "device.timezone": "Europe/Lisbon", "liveness.policy": "strict"})
    bus = EventBus()
    seen = []
    bus.subscribe(seen.append)
    outbox = Outbox.from_config(cfg, bus)
    assert outbox.path == device["home"] / "outbox.sqlite"
    rec = recorder_from_config(cfg, bus, outbox)
    d = Decision(True, "match", 3, person_id="p-1", distance=0.3, threshold=0.5)  # no liveness verdict
    pid = rec.record(d, "in")
    claims = peek(outbox.pending()[0].payload)[1]
    assert (claims["site"], claims["device"], claims["tz"]) == ("hq", "gate-2", "Europe/Lisbon")
    assert claims["liveness"] == {"policy": "strict", "passed": None, "score": None, "threshold": None}
    assert claims["clock_synced"] in (True, False, None)
    schema("punch-claims.schema.json").validate(claims)
    assert [e.type for e in seen] == ["punch.recorded"] and seen[0].data["id"] == pid
    assert outbox.stats().last_punch == {"id": pid, "ts": claims["ts"], "seq": 1}


def test_punch_service_for_the_daemon(tmp_path: Path, mosquitto: Any, contract: Any) -> None:
    from firmware_py.compose.punch_path import PunchService
    from firmware_py.config import load, with_changes
    from firmware_py.devtools.broker import Capture

    home = tmp_path / "home"
    demo = with_changes(load(None), {"device.data_dir": str(home)})
    bus = EventBus()
    offline = PunchService.from_config(demo, bus, create_key=True)  # the embedded demo: no broker
    assert offline.link is None and offline.commands is None
    offline.start()
    pid = offline.recorder.record(accepted(), "in")
    offline.stop()
    cfg = with_changes(demo, {"mqtt.enabled": True, "mqtt.brokers": [mosquitto.url]})
    cap = Capture(mosquitto.url)
    service = PunchService.from_config(cfg, bus, create_key=True, pipeline=lambda: {"fps": 9.5, "stages": {}, "last_face_ts": None})
    service.commands.register("gallery.snapshot", lambda ctx: {"ok": True})
    service.start()
    try:
        msgs = cap.wait_for(lambda m: any(t.endswith("/punch") for t, _, _ in m) and any(t.endswith("/telemetry") for t, _, _ in m))
        punch = contract.check(*next((t, p) for t, p, _ in msgs if t.endswith("/punch")))
        assert punch["id"] == pid  # queued in the demo, delivered once a broker was configured
        tele = contract.check(*next((t, p) for t, p, _ in msgs if t.endswith("/telemetry")))
        assert tele["pipeline"]["fps"] == 9.5
    finally:
        service.stop()
        cap.close()


def test_card_punch_has_method_and_null_scores(device: dict, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    rec = SignedPunchRecorder(outbox, device["key"], site="s", device="d")
    rec.record(Decision(True, "match", -1, person_id="emp-3", method="card", detail="card-only entry"), "in")
    claims = peek(outbox.pending()[0].payload)[1]
    assert claims["method"] == "card" and claims["match"] == {"distance": None, "threshold": None, "margin": None, "frames": 0}
    schema("punch-claims.schema.json").validate(claims)
    assert claims_problem(claims) is None and claims_problem(claims | {"method": "pin"}) is not None
