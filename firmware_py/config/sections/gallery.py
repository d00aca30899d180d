"""[gallery]: where the enrolled templates live and which are in scope."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware_py.config.schema import Section, setting


@dataclass(frozen=True)
class GalleryConfig(Section):
    """The encrypted template store (SQLite in device.data_dir)."""

    path: Path | None = setting(None, doc="SQLite gallery file (default: <device.data_dir>/gallery.sqlite).")
    key_file: Path | None = setting(
        None, doc="AES-256 key of the templates, mode 0600, kept outside the database (default: <device.data_dir>/keys/gallery.key)."
    )
    target_fpir: float = setting(
        0.003,
        gt=0.0,
        lt=0.5,
        doc="False-positive identification rate `kaoclock gallery calibrate` aims at when none is given (and the "
        "reader's own estimate from the gallery when none is stored).",
    )
