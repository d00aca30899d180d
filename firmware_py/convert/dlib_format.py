"""A pure-Python reader of dlib's serialization format (``dlib/serialize.h``).

Only what dlib's DNN files use is implemented:

* integers: one control byte (``size | 0x80`` when negative, ``size`` <= 8)
  then ``size`` little-endian magnitude bytes; zero is ``01 00``;
* floating point (``float``/``double``): an integer mantissa then an integer
  exponent (both in the integer encoding), value ``m * 2**e``; exponents
  32000/32001/32002 stand for +inf/-inf/nan;
* ``bool``: the ASCII byte ``'0'`` or ``'1'``;
* strings: a length integer then the bytes;
* tensors (``dlib::tensor``): int version, four int dims (n, k, nr, nc), then
  the values: raw little-endian float32 (version 2) or dlib floats (version 1);
* alias tensors: int version 1 and four int dims.

Every read names what it expected and the byte offset where it failed, so a
truncated or foreign file is refused with a message that says where and why.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from firmware_py.models.manifest import ModelError

_FLOAT_SPECIAL = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


_Int = int  # DlibReader has a method named int, which hides the type inside the class body


class DlibReader:
    """Sequential reader over the bytes of one dlib-serialized file."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    @classmethod
    def open(cls, path: Path) -> DlibReader:
        try:
            return cls(Path(path).read_bytes(), str(path))
        except OSError as exc:
            raise ModelError(f"cannot read dlib model {path}: {exc.strerror}") from None

    # -- errors ---------------------------------------------------------------
    def error(self, what: str, found: str, at: int | None = None) -> ModelError:
        at = self.pos if at is None else at
        return ModelError(
            f"{self.source}: at byte offset {at}: expected {what}, found {found} (not a dlib model of the expected layout, or a truncated file)"
        )

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            left = len(self.data) - self.pos
            raise self.error(what, f"end of file ({left} byte{'s' if left != 1 else ''} left, {n} needed)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    # -- primitives -----------------------------------------------------------
    def int(self, what: str = "an integer", max_bytes: int = 8, signed: bool = True) -> int:
        """One integer in dlib's variable-length encoding."""
        start = self.pos
        ctrl = self._take(1, what)[0]
        size, neg = ctrl & 0x0F, bool(ctrl & 0x80)
        if size == 0 or size > max_bytes or (ctrl & 0x70):
            raise self.error(what, f"control byte 0x{ctrl:02x} (a size of 1..{max_bytes} bytes was expected)", start)
        if neg and not signed:
            raise self.error(what, "a negative value for an unsigned field", start)
        value = int.from_bytes(self._take(size, what), "little")
        return -value if neg else value

    def float(self, what: str = "a floating-point number") -> float:
        """One ``float``/``double`` as dlib writes it: mantissa * 2**exponent."""
        mantissa = self.int(f"{what} (mantissa)", 8)
        exponent = self.int(f"{what} (exponent)", 2)
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        return math.ldexp(mantissa, exponent)

    def bool(self, what: str = "a bool") -> bool:
        start = self.pos
        b = self._take(1, what)[0]
        if b not in (0x30, 0x31):
            raise self.error(what, f"byte 0x{b:02x} (a bool is the character '0' or '1')", start)
        return b == 0x31

    def string(self, what: str = "a string", max_len: _Int = 1 << 20) -> str:
        start = self.pos
        n = self.int(f"{what} (length)", 8, signed=False)
        if n > max_len:
            raise self.error(what, f"a length of {n} ({self._peek_hex(start)})", start)
        raw = bytes(self._take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(what, f"non-text bytes {raw[:16]!r}", start) from None

    def expect_string(self, expected: str | tuple[str, ...], what: str) -> str:
        """A layer's version tag; refuses anything but ``expected``."""
        options = (expected,) if isinstance(expected, str) else expected
        want = f"{what}: the string {' or '.join(repr(o) for o in options)}"
        start = self.pos
        got = self.string(want, max_len=max(len(o) for o in options))
        if got not in options:
            raise self.error(want, repr(got), start)
        return got

    def expect_int(self, expected: _Int | tuple[_Int, ...], what: str) -> _Int:
        options = (expected,) if isinstance(expected, int) else expected
        start = self.pos
        got = self.int(what)
        if got not in options:
            raise self.error(f"{what} = {' or '.join(str(o) for o in options)}", str(got), start)
        return got

    def _peek_hex(self, at: _Int, n: _Int = 8) -> str:
        chunk = bytes(self.data[at : at + n])
        return f"bytes {chunk.hex(' ')}" if chunk else "end of file"

    # -- tensors --------------------------------------------------------------
    def tensor(self, what: str = "a tensor") -> np.ndarray:
        """A ``dlib::tensor`` as a float32 array of shape (n, k, nr, nc)."""
        version = self.expect_int((1, 2), f"{what}: tensor version")
        dims = tuple(self.int(f"{what}: dimension {d}", 8, signed=False) for d in ("n", "k", "nr", "nc"))
        count = math.prod(dims)
        if version == 2:
            if count * 4 > self.remaining:
                raise self.error(f"{what}: {count} float32 values ({count * 4} bytes) for shape {dims}", f"end of file ({self.remaining} bytes left)")
            raw = self._take(count * 4, what)
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)
        return np.array([self.float(f"{what}: value {i}") for i in range(count)], np.float32).reshape(dims)

    def alias_tensor(self, what: str = "an alias tensor") -> tuple[_Int, _Int, _Int, _Int]:
        self.expect_int(1, f"{what}: alias_tensor version")
        n, k, nr, nc = (self.int(f"{what}: dimension {d}", 8, signed=False) for d in ("n", "k", "nr", "nc"))
        return n, k, nr, nc


# -- writers (used by the tests to build edge cases, and documented as the inverse) --


def encode_int(value: int) -> bytes:
    """dlib's encoding of one integer (the inverse of :meth:`DlibReader.int`)."""
    neg = value < 0
    mag = -value if neg else value
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    if len(body) > 8:
        raise ValueError(f"{value} does not fit in 8 bytes")
    return bytes([len(body) | (0x80 if neg else 0)]) + body


def encode_float(value: float) -> bytes:
    """dlib's encoding of one double: an int64 mantissa and an int16 exponent."""
    if math.isnan(value):
        return encode_int(0) + encode_int(32002)
    if math.isinf(value):
        return encode_int(0) + encode_int(32000 if value > 0 else 32001)
    m, e = math.frexp(value)  # value = m * 2**e, 0.5 <= |m| < 1
    mant = int(m * (1 << 53))
    exp = e - 53
    while mant and mant % 2 == 0:
        mant //= 2
        exp += 1
    return encode_int(mant) + encode_int(exp if mant else 0)


def encode_string(s: str) -> bytes:
    raw = s.encode("ascii")
    return encode_int(len(raw)) + raw


def encode_tensor(a: np.ndarray) -> bytes:
    shape = tuple(a.shape) + (1,) * (4 - a.ndim)
    return encode_int(2) + b"".join(encode_int(d) for d in shape) + np.ascontiguousarray(a, "<f4").tobytes()
