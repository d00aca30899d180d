"""[logging]: how the daemon reports what it does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class LoggingConfig(Section):
    """Log level and format."""

    level: Literal["debug", "info", "warning", "error"] = setting("info", doc="Lowest level written.")
    format: Literal["text", "json"] = setting("text", doc="text for a terminal; json for journald / log shippers.")
