"""The face embedder: 150x150 RGB chips in, 128-D descriptors out.

The model is the project's own TFLite conversion of dlib's ResNet face model
(see models/manifest.toml and `kaoclock models build`).  Descriptors keep
dlib's scale (not L2-normalised), so dlib's Euclidean distances carry over.
The runner handles float32 and full-integer int8 models alike: it quantises
the input and de-quantises the output with the tensors' own parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from firmware_py.config import Config
from firmware_py.models.litert import load_interpreter
from firmware_py.models.manifest import ModelError, load_manifest

if TYPE_CHECKING:
    from firmware_py.config.sections.models import ModelsConfig

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
#: The manifest entry of the project's int8 embedder (models/dlib_resnet_v1_int8.toml).
EMBEDDER_MODEL = "dlib_resnet_v1_int8"


class Embedder:
    """Runs one embedder TFLite file on batches of aligned chips."""

    def __init__(self, model_path: Path, version: str, threads: int = 1) -> None:
        self.version = version
        self.path = Path(model_path)
        self._interp = load_interpreter(self.path, threads)
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        shapes = f"inputs {[i['shape'].tolist() for i in ins]}, outputs {[o['shape'].tolist() for o in outs]}"
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(f"{self.path}: not a 150x150x3 -> 128 embedder ({shapes})")
        inp, out = ins[0], outs[0]
        self._in, self._out = inp, out
        if tuple(inp["shape"][1:]) != (CHIP_SIZE, CHIP_SIZE, 3) or int(out["shape"][-1]) != DESCRIPTOR_DIM:
            raise ModelError(f"{self.path}: not a 150x150x3 -> 128 embedder ({shapes})")
        self._in_scale, self._in_zero = inp["quantization"]
        self._out_scale, self._out_zero = out["quantization"]
        # The project's int8 model takes the chip's bytes as they are (uint8, scale 1, zero point 0).
        self._raw_uint8 = inp["dtype"] == np.uint8 and (self._in_scale, self._in_zero) == (1.0, 0)

    def _prepare(self, chip: np.ndarray) -> np.ndarray:
        """Model input for one uint8 RGB chip (the model itself subtracts dlib's mean and scales)."""
        if self._raw_uint8:
            return chip[None]
        x = chip.astype(np.float32)[None]
        dtype = self._in["dtype"]
        if dtype == np.float32:
            return x
        q = np.round(x / self._in_scale + self._in_zero)
        info = np.iinfo(dtype)
        return np.clip(q, info.min, info.max).astype(dtype)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors ``(N, 128)`` float32 for uint8 chips ``(N, 150, 150, 3)`` or one chip ``(150, 150, 3)``."""
        single = chips.ndim == 3
        batch = chips[None] if single else chips
        if batch.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 chips of shape (N, 150, 150, 3), got {batch.dtype} {batch.shape}")
        out = np.empty((len(batch), DESCRIPTOR_DIM), np.float32)
        for i, chip in enumerate(batch):
            self._interp.set_tensor(self._in["index"], self._prepare(chip))
            self._interp.invoke()
            y = self._interp.get_tensor(self._out["index"]).reshape(-1)
            if self._out["dtype"] != np.float32:
                y = (y.astype(np.float32) - self._out_zero) * self._out_scale
            out[i] = y
        return out[0] if single else out


def load_embedder(source: Config | ModelsConfig | Path | None = None, threads: int | None = None, name: str = EMBEDDER_MODEL) -> Embedder:
    """The project's int8 embedder, its sha256 checked against the manifest, tagged with the manifest's version.

    ``source`` is a :class:`~firmware_py.config.Config`, its ``models`` section,
    a models directory, or None (the embedded default config).  ``threads``
    defaults to the config's ``models.threads`` (1 for a bare directory).
    A file that does not match its manifest entry raises
    :class:`~firmware_py.models.manifest.ModelError` naming the file, the
    expected and the found sha256.
    """
    if source is None:
        from firmware_py.config import load

        source = load(None)
    models_cfg: ModelsConfig | Path = source.models if isinstance(source, Config) else source
    if isinstance(models_cfg, Path):
        models_dir, default_threads, verify = models_cfg, 1, True
    else:
        models_dir, default_threads, verify = models_cfg.dir, models_cfg.threads, models_cfg.verify_on_start
    manifest = load_manifest()
    entry = manifest.entry(name)
    if entry.role != "runtime":
        raise ModelError(f"model {name} is a {entry.role} model, not a runtime embedder")
    path = manifest.require(name, models_dir, verify=verify)
    return Embedder(path, entry.version, threads or default_threads)
