"""Keep numpy's BLAS on one thread.

A 1:N probe is one matrix-vector product, memory-bound: extra BLAS threads
do not make it faster, but on a busy 2-4 core board each call waits for its
helper threads to be scheduled (measured here: 8-12 ms instead of 0.05 ms
for 5k templates while other processes ran).  The reader's cores belong to
the camera and the TFLite models, so BLAS gets one.  Done through the
library's own ``*_set_num_threads`` (what threadpoolctl does), best effort.
"""

from __future__ import annotations

import ctypes
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads", "openblas_set_num_threads64_")


def limit_blas_threads(n: int = 1) -> list[str]:
    """Set every loaded OpenBLAS to ``n`` threads; returns the libraries changed."""
    import numpy  # noqa: F401  (loads its BLAS)

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    changed = []
    for lib in sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", maps))):
        try:
            handle = ctypes.CDLL(lib)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(handle, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                changed.append(lib)
                break
    if not changed:
        log.debug("no OpenBLAS found to limit to %d thread(s)", n)
    return changed
