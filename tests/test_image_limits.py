"""Images above the pixel limit are refused from their header, before decoding, with a clear message."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from firmware_py.capture import EndOfStream, ImageFolderReplay
from firmware_py.capture.still import ImageTooLarge, open_still
from firmware_py.gallery.enrol import check_photo


def huge_png(path: Path, width: int, height: int) -> Path:
    """A tiny file whose header claims width x height (what a hostile or mistaken file can do)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own warning from the header; we refuse anyway
def test_enrolment_refuses_a_144_megapixel_photo_before_decoding(tmp_path: Path) -> None:
    photo = huge_png(tmp_path / "big.png", 12000, 12000)
    with pytest.raises(ImageTooLarge, match="144 megapixels"):
        open_still(photo)
    report = check_photo(None, None, photo)  # refused before the analyzer is ever asked
    assert not report.ok and report.reasons == ["too_large"] and "downscale" in report.message


def test_replay_skips_a_decompression_bomb_header_and_keeps_running(tmp_path: Path, grace_hopper: np.ndarray) -> None:
    folder = tmp_path / "walkup"
    folder.mkdir()
    Image.fromarray(grace_hopper).save(folder / "001.jpg")
    huge_png(folder / "002.png", 20000, 20000)  # Pillow's DecompressionBombError territory
    Image.fromarray(grace_hopper).save(folder / "003.jpg")
    cam = ImageFolderReplay(folder, fps=10)
    frames = []
    with cam:
        while True:
            try:
                frames.append(cam.read(timeout=5))
            except EndOfStream:
                break
    assert len(frames) == 2 and cam.skipped == 1
