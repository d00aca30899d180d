"""Load a TFLite model with LiteRT, or with tflite_runtime where a board has only that."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_py.models.manifest import ModelError


def interpreter_class() -> Any:
    """``ai_edge_litert``'s Interpreter, falling back to ``tflite_runtime``'s."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            raise ModelError("no TFLite runtime: install ai-edge-litert (pip install ai-edge-litert) or, on older boards, tflite-runtime") from None
    return Interpreter


def load_interpreter_from_bytes(model: bytes, threads: int = 1) -> Any:
    """An allocated interpreter for an in-memory model (the converter checks what it just built)."""
    cls = interpreter_class()
    try:
        interp = cls(model_content=model, num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load the model just built: {exc}") from None
    return interp


def load_interpreter(path: Path, threads: int = 1) -> Any:
    """An allocated interpreter for ``path``; a corrupt file is refused by name."""
    cls = interpreter_class()
    try:
        interp = cls(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load model {path}: {exc}") from None
    return interp
