"""Fusing the per-frame texture cues: a logistic regression shipped as plain numbers.

The model is a JSON file (``models/liveness_texture_v4.json``, listed in
``models/manifest.toml`` with its sha256) holding, for each feature of
:data:`firmware_py.liveness.texture.FRAME_FEATURE_NAMES`, a mean and scale
(standardisation) and a weight, plus a bias.  The frame's score (``logit``) is
``sum(w * (x - mean) / scale) + bias``: above the operating threshold it looks
live.  The training script rescales the weights and bias so that the score of
a typical live face of people it did not train on is 0 and of a typical
attack -1 (:func:`firmware_py.eval.liveness_train.standardised`).  Because it is linear, the logit splits exactly into one contribution per
cue group (colour, specular, frequency, micro-texture, colour texture,
context), which is how a verdict says *why* it rejected a face.

Training: ``python -m firmware_py.eval.liveness_train`` (numpy only, reproducible).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from firmware_py.errors import ExitCode, KaoclockError
from firmware_py.liveness.texture import FRAME_FEATURE_NAMES, cue_group

if TYPE_CHECKING:
    from firmware_py.config import Config


class LivenessModelError(KaoclockError):
    """The liveness coefficient file is missing, corrupt or made for other features."""

    exit_code = ExitCode.UNAVAILABLE


@dataclass(frozen=True)
class TextureModel:
    """Standardise-then-linear model over the per-frame cue vector."""

    features: tuple[str, ...]
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    weights: NDArray[np.float64]
    bias: float
    version: str = "liveness_texture_v4"
    build: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        if not (len(self.mean) == len(self.scale) == len(self.weights) == n):
            raise LivenessModelError(f"liveness model {self.version}: {n} features but coefficient arrays of other lengths")
        if tuple(self.features) != FRAME_FEATURE_NAMES:
            raise LivenessModelError(
                f"liveness model {self.version} was trained on other cue features than this build computes; "
                "retrain it with `python -m firmware_py.eval.liveness_train`"
            )
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(self.features):
            groups.setdefault(cue_group(name), []).append(i)
        object.__setattr__(self, "_groups", {g: np.array(ix) for g, ix in groups.items()})

    @classmethod
    def load(cls, path: Path) -> TextureModel:
        """Read a coefficient file; a corrupt one is refused by name."""
        try:
            raw = json.loads(Path(path).read_text())
            return cls(
                features=tuple(raw["features"]),
                mean=np.asarray(raw["mean"], np.float64),
                scale=np.asarray(raw["scale"], np.float64),
                weights=np.asarray(raw["weights"], np.float64),
                bias=float(raw["bias"]),
                version=str(raw.get("version", "liveness_texture_v4")),
                build=dict(raw.get("build", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LivenessModelError(f"cannot read liveness model {path}: {exc}; restore it from git or retrain it") from None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": 1,
                "version": self.version,
                "features": list(self.features),
                "mean": [round(float(v), 8) for v in self.mean],
                "scale": [round(float(v), 8) for v in self.scale],
                "weights": [round(float(v), 8) for v in self.weights],
                "bias": round(float(self.bias), 8),
                "build": self.build,
            },
            indent=1,
        )

    def logit(self, x: NDArray[np.floating]) -> float:
        """The frame's fused texture score (higher = more likely live)."""
        return float(((np.asarray(x) - self.mean) / self.scale) @ self.weights + self.bias)

    def logits(self, x: NDArray[np.floating]) -> NDArray[np.float64]:
        """The scores of a (N, features) batch of frames."""
        return np.asarray(((np.asarray(x) - self.mean) / self.scale) @ self.weights + self.bias, np.float64)

    def contributions(self, x: NDArray[np.floating]) -> dict[str, float]:
        """The logit split by cue group (they sum to ``logit - bias``)."""
        z = (np.asarray(x) - self.mean) / self.scale * self.weights
        return {g: float(z[ix].sum()) for g, ix in self._groups.items()}  # type: ignore[attr-defined]


def load_default_model(cfg: Config) -> TextureModel:
    """The coefficient file ``[liveness] model`` names, verified against models/manifest.toml."""
    from firmware_py.models.manifest import load_manifest

    path = load_manifest().require(cfg.liveness.model, cfg.models.dir)
    return TextureModel.load(path)
