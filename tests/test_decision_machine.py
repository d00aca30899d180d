"""The per-track state machine: K of N, liveness wait, cooldown, and every reject reason; the sinks."""

from __future__ import annotations

import io
import json
import typing

import pytest

from firmware_py.decision.machine import DecisionMachine, DecisionParams
from firmware_py.decision.outcome import LivenessVerdict, Reason
from firmware_py.decision.sinks import ConsoleSink, EventSink, JsonLinesSink, SinkFanOut
from firmware_py.events import EventBus
from firmware_py.gallery.matcher import MatchResult

P = DecisionParams(k=3, n=5, cooldown_s=60, track_timeout_s=5, liveness_timeout_s=2)


def hit(pid="grace", d=0.3, second=0.8):
    return MatchResult("match", pid, pid.title(), d, "other", second, 0.45)


def unknown(d=0.7):
    return MatchResult("unknown", "grace", "Grace", d, "other", 0.9, 0.45)


def ambiguous():
    return MatchResult("ambiguous", "grace", "Grace", 0.30, "twin", 0.31, 0.45)


def empty():
    return MatchResult("empty", None, None, None, None, None, 0.45)


class ScriptedLiveness:
    """A liveness stage whose verdict the test sets (the interface a real stage implements)."""

    policy = "passive"

    def __init__(self):
        self.verdicts: dict[int, LivenessVerdict | None] = {}
        self.seen: list[object] = []
        self.forgotten: list[int] = []

    def observe(self, observation, frame=None):
        self.seen.append(observation)

    def verdict(self, track_id):
        return self.verdicts.get(track_id)

    def forget(self, track_id):
        self.forgotten.append(track_id)


def feed(m, track, frames, t0=0.0, dt=0.1):
    out = []
    for i, f in enumerate(frames):
        d = m.observe(track, t0 + i * dt, f) if f is not None else m.observe(track, t0 + i * dt, None, False, "too blurred")
        if d:
            out.append(d)
    return out


def test_k_of_n_agreeing_frames_accept_once_with_evidence():
    m = DecisionMachine(P, model_versions={"embedder": "e1"})
    got = feed(m, 1, [hit(), unknown(), hit(d=0.32), hit(d=0.28), hit(), hit()])
    assert len(got) == 1  # one decision per walk-up
    d = got[0]
    assert d.accepted and d.reason == "match" and d.person_id == "grace" and d.person_name == "Grace"
    assert d.frames == 3 and d.distance == pytest.approx(0.3) and d.margin == pytest.approx(0.5)
    assert d.liveness.policy == "off" and d.liveness.score is None and "off" in d.liveness.reason
    assert d.model_versions == {"embedder": "e1"}


def test_k_minus_one_frames_decide_nothing():
    m = DecisionMachine(P)
    assert feed(m, 1, [hit(), hit(), unknown(), unknown()]) == []


def test_unknown_after_k_unknown_frames():
    (d,) = feed(DecisionMachine(P), 1, [unknown(), unknown(), hit(), unknown()])
    assert not d.accepted and d.reason == "unknown" and d.distance == pytest.approx(0.7)


def test_ambiguous_margin():
    (d,) = feed(DecisionMachine(P), 1, [ambiguous()] * 3)
    assert d.reason == "ambiguous" and "too close" in d.detail


def test_frames_that_never_agree_end_ambiguous_at_timeout():
    m = DecisionMachine(P)
    feed(m, 1, [hit("a"), hit("b"), unknown(), hit("c"), ambiguous()])
    assert m.tick(4.0) == []
    (d,) = m.tick(5.0)
    assert d.reason == "ambiguous" and "never agreed" in d.detail


def test_low_quality_when_no_usable_frame():
    m = DecisionMachine(P)
    feed(m, 1, [None] * 6)
    (d,) = m.tick(6.0)
    assert d.reason == "low_quality" and "too blurred x6" in d.detail


def test_timeout_when_track_ends_early():
    m = DecisionMachine(P)
    feed(m, 1, [hit(), hit()])
    d = m.end_track(1, 0.5)
    assert d.reason == "timeout" and "2 usable" in d.detail and d.person_id == "grace"


def test_cooldown_per_person():
    m = DecisionMachine(P)
    (first,) = feed(m, 1, [hit()] * 3, t0=0)
    (again,) = feed(m, 2, [hit()] * 3, t0=10)
    (other,) = feed(m, 3, [hit("bob")] * 3, t0=11)
    (later,) = feed(m, 4, [hit()] * 3, t0=70)
    assert first.accepted and other.accepted and later.accepted
    assert not again.accepted and again.reason == "cooldown" and again.person_id == "grace" and "next in" in again.detail


def test_cooldown_survives_a_backward_clock_step():
    mono = [1000.0]
    m = DecisionMachine(P, monotonic=lambda: mono[0])
    (first,) = feed(m, 1, [hit()] * 3, t0=5000)
    mono[0] += 61  # a minute passes ...
    (after_step,) = feed(m, 2, [hit()] * 3, t0=5000 - 3600 + 61)  # ... and the camera's wall clock stepped back an hour
    assert first.accepted and after_step.accepted  # not refused as "cooldown" for the step plus 60 s
    mono[0] += 10
    (soon,) = feed(m, 3, [hit()] * 3, t0=5000 - 3600 + 71)
    assert not soon.accepted and soon.reason == "cooldown"  # the cooldown itself still holds


def test_liveness_pending_then_pass_or_spoof_or_timeout():
    live = ScriptedLiveness()
    m = DecisionMachine(P, liveness=live)
    assert feed(m, 1, [hit()] * 4) == []  # identified, liveness pending
    live.verdicts[1] = LivenessVerdict("passive", True, 0.9, 0.5, {"blink": 1.0}, "blinked")
    (d,) = feed(m, 1, [hit()], t0=0.5)
    assert d.accepted and d.liveness.score == 0.9

    feed(m, 2, [hit("bob")] * 3)
    live.verdicts[2] = LivenessVerdict("passive", False, 0.1, 0.5, {"moire": 0.9}, "moire pattern of a screen")
    (s,) = m.tick(0.4)
    assert s.reason == "spoof" and s.person_id == "bob" and "moire" in s.detail and not s.accepted

    feed(m, 3, [hit("carol")] * 3)
    assert m.tick(1.0) == []
    (t,) = m.tick(2.5)
    assert t.reason == "timeout" and "liveness" in t.detail and t.person_id == "carol"
    m.end_track(3, 3.0)
    assert 3 in live.forgotten


def test_model_mismatch_when_gallery_templates_are_of_another_embedder():
    m = DecisionMachine(P)
    m.mismatch_detail = "4 templates were made by embedder old-v0; re-enrol or re-sync"
    (d,) = feed(m, 1, [empty()] * 3)
    assert d.reason == "model_mismatch" and "re-enrol" in d.detail
    # without a mismatch an empty gallery simply knows nobody
    (u,) = feed(DecisionMachine(P), 1, [empty()] * 3)
    assert u.reason == "unknown"


def test_every_reason_is_produced_by_these_tests():
    produced = {"match", "unknown", "ambiguous", "spoof", "cooldown", "low_quality", "timeout", "model_mismatch"}
    assert produced == set(typing.get_args(Reason))


def test_sinks_console_jsonl_events_and_fanout(tmp_path):
    bus = EventBus()
    events = []
    bus.subscribe(events.append, "decision.")
    con, js = io.StringIO(), tmp_path / "d.jsonl"

    class Broken:
        def on_decision(self, d):
            raise RuntimeError("relay driver crashed")

    fan = SinkFanOut([ConsoleSink(con), Broken(), JsonLinesSink(js), EventSink(bus)])
    m = DecisionMachine(P)
    for d in feed(m, 1, [hit()] * 3) + feed(m, 2, [unknown()] * 3):
        fan.on_decision(d)
    lines = con.getvalue().splitlines()
    assert "ACCEPT" in lines[0] and "Grace (grace)" in lines[0] and "liveness off" in lines[0]
    assert "REJECT" in lines[1] and "unknown" in lines[1] and "0.700 > 0.450" in lines[1]
    recs = [json.loads(x) for x in js.read_text().splitlines()]
    assert [r["reason"] for r in recs] == ["match", "unknown"] and recs[0]["liveness"]["policy"] == "off"
    assert [e.type for e in events] == ["decision.accept", "decision.reject"]
    assert events[1].data["reason"] == "unknown"


def test_settled_identity_stops_embedding_while_liveness_still_watches():
    live = ScriptedLiveness()
    m = DecisionMachine(P, live)
    assert m.needs_embedding(1)  # an unseen track is embedded
    assert feed(m, 1, [hit(), hit()]) == [] and m.needs_embedding(1)  # k - 1 votes: keep embedding
    assert m.observe(1, 0.2, hit()) is None  # k votes: settled, liveness pending
    assert not m.needs_embedding(1) and not m.is_decided(1)
    assert m.tick(0.5) == []  # still pending: no decision, still no embedding
    assert not m.needs_embedding(1)
    live.verdicts[1] = LivenessVerdict(policy="passive", passed=True, score=0.2, threshold=-0.5, reason="live")
    got = m.tick(0.9)  # the verdict arrives on a later frame that was not embedded
    assert [d.reason for d in got] == ["match"] and got[0].person_id == "grace" and got[0].frames == 3
    assert not m.needs_embedding(1)
    m.end_track(1, 1.0)
    assert m.needs_embedding(1)  # a new walk-up with a reused id is embedded again


def test_unknown_votes_keep_embedding_until_they_decide():
    m = DecisionMachine(P, ScriptedLiveness())
    feed(m, 1, [unknown(), unknown()])
    assert m.needs_embedding(1)
    assert [d.reason for d in feed(m, 1, [unknown()], t0=0.2)] == ["unknown"]
    assert not m.needs_embedding(1)
