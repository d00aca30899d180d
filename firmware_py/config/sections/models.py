"""[models]: where the model files live and how they are checked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from firmware_py.config.schema import Section, setting


def default_models_dir() -> Path:
    """$KAOCLOCK_MODELS, else ~/.cache/kaoclock/models."""
    env = os.environ.get("KAOCLOCK_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kaoclock" / "models"


@dataclass(frozen=True)
class ModelsConfig(Section):
    """Model files: fetched ones in ``dir``, the project's own build in the tree's models/."""

    dir: Path = setting(default_factory=default_models_dir, doc="Directory that `kaoclock models fetch` fills (outside git).")
    verify_on_start: bool = setting(True, doc="Check every model file against its sha256 in models/manifest.toml before starting.")
    threads: int = setting(1, ge=1, le=8, doc="LiteRT interpreter threads per model.")
