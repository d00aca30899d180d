"""LED and buzzer patterns: one per feedback state, told apart without reading.

A :class:`Pattern` is an *intro* played once (the beeps) followed by a *loop*
repeated until the state changes.  Each step lists the outputs that are on:
``green``, ``red``, ``amber`` (LEDs) and ``buzzer``.  The patterns differ in
rhythm and beep count as well as colour, so a red-green colour-blind person
can tell accepted (one short beep, steady) from unknown (two beeps) from
spoof (one long beep, fast flicker).  hw/README.md prints this table
(``kaoclock hw patterns`` too).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    seconds: float
    on: frozenset[str]


def S(seconds: float, *on: str) -> Step:
    return Step(seconds, frozenset(on))


@dataclass(frozen=True)
class Pattern:
    """What the LEDs and buzzer do in one state."""

    name: str
    intro: tuple[Step, ...]
    loop: tuple[Step, ...]
    colour: str  # for people: the table in hw/README.md
    rhythm: str
    beeps: str

    def at(self, t: float) -> tuple[frozenset[str], float]:
        """Outputs on at ``t`` seconds into the pattern, and the seconds until the next step."""
        for step in self.intro:
            if t < step.seconds:
                return step.on, step.seconds - t
            t -= step.seconds
        period = sum(s.seconds for s in self.loop)
        t %= period
        for step in self.loop:
            if t < step.seconds:
                return step.on, step.seconds - t
            t -= step.seconds
        return self.loop[-1].on, self.loop[-1].seconds  # float rounding at the period's end

    def without(self, output: str) -> Pattern:
        """The same pattern with one output never on (quiet mode drops the buzzer)."""

        def strip(steps: tuple[Step, ...]) -> tuple[Step, ...]:
            return tuple(Step(s.seconds, s.on - {output}) for s in steps)

        return Pattern(self.name, strip(self.intro), strip(self.loop), self.colour, self.rhythm, self.beeps)


_ = ()
PATTERNS: dict[str, Pattern] = {
    p.name: p
    for p in (
        Pattern("idle", _, (S(0.1, "green"), S(2.9)), "green", "short blip every 3 s (alive)", "none"),
        Pattern("looking", _, (S(1.0, "amber"),), "amber", "steady", "none"),
        Pattern(
            "choose_direction",
            (S(0.05, "amber", "buzzer"),),
            (S(0.25, "amber"), S(0.25)),
            "amber",
            "blinks twice a second: press IN or OUT",
            "one chirp",
        ),
        Pattern(
            "present_card",
            (S(0.05, "green", "amber", "buzzer"),),
            (S(0.25, "green"), S(0.25, "amber")),
            "green / amber",
            "alternating: show your card",
            "one chirp",
        ),
        Pattern("accepted", (S(0.15, "green", "buzzer"),), (S(1.0, "green"),), "green", "steady", "one short beep"),
        Pattern(
            "rejected_unknown",
            (S(0.1, "red", "buzzer"), S(0.1, "red"), S(0.1, "red", "buzzer")),
            (S(1.0, "red"),),
            "red",
            "steady",
            "two short beeps",
        ),
        Pattern(
            "rejected_spoof",
            (S(0.6, "red", "buzzer"),),
            (S(0.1, "red"), S(0.1)),
            "red",
            "fast flicker (5 per second)",
            "one long beep",
        ),
        Pattern("rejected_cooldown", _, (S(1.0, "green", "amber"),), "green + amber", "steady (already punched)", "none"),
        Pattern(
            "rejected_other",
            (S(0.1, "red", "buzzer"), S(0.1, "red"), S(0.1, "red", "buzzer"), S(0.1, "red"), S(0.1, "red", "buzzer")),
            (S(1.0, "red"),),
            "red",
            "steady",
            "three short beeps",
        ),
        Pattern("offline", _, (S(0.1, "amber"), S(0.2), S(0.1, "amber"), S(2.6)), "amber", "double blip every 3 s", "none"),
        Pattern("fault", (S(1.0, "red", "buzzer"),), (S(0.5, "red"), S(0.5)), "red", "slow blink (1 per second)", "one 1 s beep at onset"),
    )
}

# Door held open / forced open: laid over whatever the state shows; quiet mode never silences it.
ALARM = Pattern("alarm", _, (S(0.25, "red", "buzzer"), S(0.25)), "red", "pulses twice a second with the buzzer", "continuous beeping")

# States that persist until changed; the others are shown for a while and fall back to one of these.
BACKGROUND = ("idle", "offline", "fault")


def table_markdown() -> str:
    """The pattern table as Markdown (hw/README.md embeds it)."""
    rows = ["| state | colour | rhythm | beeps |", "|---|---|---|---|"]
    for p in (*PATTERNS.values(), ALARM):
        rows.append(f"| {p.name} | {p.colour} | {p.rhythm} | {p.beeps} |")
    return "\n".join(rows)
