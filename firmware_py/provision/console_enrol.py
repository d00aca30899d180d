"""The technician console's ``enrol`` command: live enrolment at the reader over the serial line.

    enrol start e7 "Grace Hopper" [SITE[,SITE...]] [FRAMES] [WINDOW_S]
    enrol status
    enrol confirm [PERSON_ID]
    enrol cancel

The same :class:`~firmware_py.provision.live_enrol.LiveEnrolment` as the
signed MQTT commands, so a window opened from the backend can be confirmed
on the console and the other way round.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from firmware_py.mqtt.commands.registry import CommandRefused
from firmware_py.provision.gallery_sync import SITE_RE
from firmware_py.provision.live_enrol import LiveEnrolment
from firmware_py.serial.commands import Command, CommandUsageError, SessionLike

USAGE = 'enrol start ID "NAME" [SITES] [FRAMES] [WINDOW_S] | enrol status | enrol confirm [ID] | enrol cancel'


def _number(text: str, what: str, lo: float, hi: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CommandUsageError(f"{what} {text!r} is not a number") from None
    if not lo <= value <= hi:
        raise CommandUsageError(f"{what} must be from {lo:g} to {hi:g}")
    return value


def _lines(data: dict[str, Any]) -> list[str]:
    return [f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in data.items()]


def enrol_command(live: LiveEnrolment) -> Command:
    """The console command driving ``live``."""

    def handler(s: SessionLike, args: list[str]) -> Iterable[str]:
        action = args[0] if args else ""
        try:
            if action == "start":
                if not 3 <= len(args) <= 6:
                    raise CommandUsageError('say: enrol start ID "NAME" [SITES] [FRAMES] [WINDOW_S]')
                pid, name = args[1], args[2]
                sites = args[3].split(",") if len(args) > 3 else [s.ctx.get_config().device.site]
                if not all(SITE_RE.fullmatch(x) for x in sites):
                    raise CommandUsageError("sites are site ids (lowercase letters, digits, '-') separated by commas")
                frames = int(_number(args[4], "FRAMES", 2, 10)) if len(args) > 4 else 5
                window = _number(args[5], "WINDOW_S", 3, 120) if len(args) > 5 else 30.0
                out = live.open(pid, name, sites, frames, window, opened_by="console")
                return [
                    f"enrolment window open for {pid} ({name}): {frames} good frames within {window:g} s",
                    "ask the person to look at the reader; then `enrol status`, and `enrol confirm` when it is pending",
                    *_lines({"confirm_s": out["confirm_s"]}),
                ]
            if action == "status" and len(args) == 1:
                return _lines(live.status())
            if action == "confirm" and len(args) <= 2:
                out = live.confirm(args[1] if len(args) == 2 else None, by="console")
                return [f"stored {out['templates']} templates for {out['person_id']} (gallery version {out['version']})"]
            if action == "cancel" and len(args) == 1:
                out = live.cancel(by="console")
                return [f"discarded the enrolment of {out['person_id']}" if out["cancelled"] else "nothing to cancel"]
        except CommandRefused as exc:
            return [f"refused ({exc.reason}): {exc}"]
        raise CommandUsageError(f"say: {USAGE}")

    return Command("enrol", USAGE, "live enrolment at this reader: start a window, check it, confirm or cancel", handler)
