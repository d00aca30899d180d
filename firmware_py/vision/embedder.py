"""The face embedder: 150x150 RGB chips in, 128-D descriptors out.

The model is the project's own TFLite conversion of dlib's ResNet face model
(see models/manifest.toml and `kaoclock models build`).  Descriptors keep
dlib's scale (not L2-normalised), so dlib's Euclidean distances carry over.
The runner handles float32 and full-integer int8 models alike: it quantises
the input and de-quantises the output with the tensors' own parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_py.models.litert import load_interpreter

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128


class Embedder:
    """Runs one embedder TFLite file on batches of aligned chips."""

    def __init__(self, model_path: Path, version: str, threads: int = 1) -> None:
        self.version = version
        self.path = Path(model_path)
        self._interp = load_interpreter(self.path, threads)
        (inp,) = self._interp.get_input_details()
        (out,) = self._interp.get_output_details()
        self._in, self._out = inp, out
        if tuple(inp["shape"][1:]) != (CHIP_SIZE, CHIP_SIZE, 3) or int(out["shape"][-1]) != DESCRIPTOR_DIM:
            raise ValueError(f"{self.path}: not a 150x150x3 -> 128 embedder (in {inp['shape']}, out {out['shape']})")
        self._in_scale, self._in_zero = inp["quantization"]
        self._out_scale, self._out_zero = out["quantization"]

    def _prepare(self, chip: np.ndarray) -> np.ndarray:
        """Model input for one uint8 RGB chip (the model itself subtracts dlib's mean and scales)."""
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
