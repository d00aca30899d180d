"""`kaoclock bench backend` on a small fleet: a real mosquitto and PostgreSQL, real signed punches and receipts.

The figures (punches/s, sync seconds) are for the bench's JSON, not asserted;
what is asserted is what the figures stand on: every punch stored once,
every receipt's signature checked and accepted, one person's move reaching
two different sites.
"""

from __future__ import annotations

import json
import shutil

import pytest

from firmware_py.cli.main import main
from firmware_py.devtools.postgres import find_bindir

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None or find_bindir() is None,
    reason="mosquitto or PostgreSQL's server binaries are not installed (device/bootstrap.sh --dev installs them)",
)


@pytest.mark.parametrize("checked", ["after", "live"])
def test_a_small_fleet_stores_every_punch_once_with_checked_receipts(checked: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "backend", "--readers", "6", "--people", "30", "--punches", "600", "--latency-punches", "100"]
    # (--kill-one is left to the bench's long runs and tests/test_backend_postgres.py; at 600 punches it is a coin-toss
    # whether the killed consumer held any, and the ones it did hold wait for its session's redelivery or their resend)
    args += ["--consumers", "2", "--sync-sites", "3", "--receipts-checked", checked, "--receipt-timeout", "20", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    p = out["punches"]
    assert p["published"] == p["stored"] == 600
    assert p["losses"] == 0 and p["duplicate_rows"] == 0 and p["rejects"] == 0
    assert p["receipts_checked"] == checked and p["receipts_refused"] == 0 and p["without_receipt_at_end"] == 0
    assert p["receipts"] >= 1
    assert p["throughput"]["punches"] == 500 and p["throughput"]["stored_per_s"] > 0
    sync = out["sync"]
    assert sync["not_synced"] == [] and sync["readers"] == 3
    moved = sync["one_change"]
    src, dst = moved.split(" moved ")[1].split(":")[0].split(" -> ")
    assert src != dst, moved
