"""The topic tree: ``kaoclock/v1/<site>/<device>/<channel>`` (see mqtt/asyncapi.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "kaoclock/v1"
CHANNELS = ("punch", "status", "telemetry", "events", "commands", "command_results", "receipts")


@dataclass(frozen=True)
class Topics:
    """Every topic of one device."""

    site: str
    device: str
    prefix: str = PREFIX

    def _t(self, channel: str) -> str:
        return f"{self.prefix}/{self.site}/{self.device}/{channel}"

    @property
    def punch(self) -> str:
        return self._t("punch")

    @property
    def status(self) -> str:
        return self._t("status")

    @property
    def telemetry(self) -> str:
        return self._t("telemetry")

    @property
    def events(self) -> str:
        return self._t("events")

    @property
    def commands(self) -> str:
        return self._t("commands")

    @property
    def command_results(self) -> str:
        return self._t("command_results")

    @property
    def receipts(self) -> str:
        return self._t("receipts")


def fleet_filter(channel: str, prefix: str = PREFIX, site: str = "+") -> str:
    """A subscription filter for ``channel`` of every device (of one site, or all)."""
    return f"{prefix}/{site}/+/{channel}"


def parse_topic(topic: str, prefix: str = PREFIX) -> tuple[str, str, str] | None:
    """(site, device, channel) of a device topic, or None when it is not one."""
    if not topic.startswith(prefix + "/"):
        return None
    rest = topic[len(prefix) + 1 :].split("/")
    if len(rest) != 3 or not all(rest):
        return None
    return rest[0], rest[1], rest[2]
