"""The embedded demo runs to completion: the enrolled person is accepted, the stranger is "unknown"."""

from __future__ import annotations

import io

from firmware_py.cli.main import main


def test_demo_accepts_grace_and_calls_the_astronaut_unknown(models_dir):
    from firmware_py.demo import run_demo

    out = io.StringIO()
    result = run_demo(out=out)
    reasons = [(d.reason, d.person_id if d.accepted else None) for d in result.decisions]
    assert reasons == [("match", "grace"), ("unknown", None), ("cooldown", None)], out.getvalue()
    text = out.getvalue()
    assert "ACCEPT  Grace Hopper (grace)" in text
    assert "REJECT  unknown" in text and "REJECT  cooldown" in text
    assert result.decisions[1].distance > result.decisions[1].threshold
    assert result.frames == 90 and "demo: done" in text


def test_kaoclock_run_without_config_is_the_demo(models_dir, capsys):
    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert "ACCEPT" in out and "unknown" in out and "demo: done" in out
