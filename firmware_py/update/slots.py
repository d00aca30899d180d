"""The two install slots and the links that say which one runs and which one is known good.

Layout under the slots root (``/opt/kaoclock`` on a reader)::

    slots/a/            one release: the bundle's files, plus
    slots/a/venv        -> ../../venvs/KEY (the Python environment it runs with)
    slots/a/.kaoclock/  slot.json (written last: the slot is complete), MANIFEST.json/.sig
    slots/b/            the other release
    venvs/KEY/          virtual environments, shared by slots with the same requirements
    current   -> slots/a    what the service starts (ExecStart)
    committed -> slots/a    the last release that passed its health check (runs the boot check)

Both links are replaced atomically (a new link renamed over the old one, then
the directory fsynced), so after a power cut each points at a whole slot.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_py.fsutil import atomic_symlink, atomic_write_bytes, atomic_write_json, fsync_dir, remove_tree
from firmware_py.update.errors import UpdateError

SLOTS = ("a", "b")
META_DIR = ".kaoclock"
LAUNCHER = Path("device/bin/kaoclock")


@dataclass(frozen=True)
class SlotMeta:
    """What was installed into a slot (from ``.kaoclock/slot.json``)."""

    slot: str
    version: str
    installed: str
    source: str
    bundle_sha256: str
    signer: str
    venv_key: str
    requirements: tuple[str, ...]

    @classmethod
    def from_json(cls, slot: str, doc: dict[str, Any]) -> SlotMeta:
        return cls(
            slot=slot,
            version=str(doc.get("version", "?")),
            installed=str(doc.get("installed", "")),
            source=str(doc.get("source", "")),
            bundle_sha256=str(doc.get("bundle_sha256", "")),
            signer=str(doc.get("signer", "")),
            venv_key=str(doc.get("venv_key", "")),
            requirements=tuple(doc.get("requirements", ())),
        )


class SlotStore:
    """The A/B slots under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.slots_dir = self.root / "slots"
        self.venvs_dir = self.root / "venvs"

    def ensure_layout(self) -> None:
        for d in (self.root, self.slots_dir, self.venvs_dir, *(self.path(s) for s in SLOTS)):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)

    def path(self, slot: str) -> Path:
        if slot not in SLOTS:
            raise UpdateError(f"unknown slot {slot!r} (slots are {', '.join(SLOTS)})")
        return self.slots_dir / slot

    @staticmethod
    def other(slot: str | None) -> str:
        return "b" if slot == "a" else "a"

    def launcher(self, slot: str) -> Path:
        return self.path(slot) / LAUNCHER

    # -------------------------------------------------------- links

    def _read_link(self, name: str) -> str | None:
        try:
            target = os.readlink(self.root / name)
        except (FileNotFoundError, OSError):
            return None
        parts = Path(target).parts
        return parts[-1] if len(parts) == 2 and parts[0] == "slots" and parts[1] in SLOTS else None

    def current(self) -> str | None:
        """The slot the service starts, or None before the first install."""
        return self._read_link("current")

    def committed(self) -> str | None:
        """The last slot that passed its health check."""
        return self._read_link("committed")

    def set_current(self, slot: str) -> None:
        self.path(slot)
        atomic_symlink(self.root / "current", f"slots/{slot}")

    def set_committed(self, slot: str) -> None:
        self.path(slot)
        atomic_symlink(self.root / "committed", f"slots/{slot}")

    def unlink(self, name: str) -> None:
        if name not in ("current", "committed"):
            raise UpdateError(f"unknown link {name!r}")
        link = self.root / name
        if link.is_symlink():
            link.unlink()
            fsync_dir(self.root)

    # -------------------------------------------------------- contents

    def meta(self, slot: str) -> SlotMeta | None:
        """The slot's install record; None for an empty or half-written slot."""
        try:
            doc = json.loads((self.path(slot) / META_DIR / "slot.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return SlotMeta.from_json(slot, doc) if isinstance(doc, dict) else None

    def wipe(self, slot: str) -> None:
        """Empty a slot (never the one that runs or the committed one)."""
        if slot in (self.current(), self.committed()):
            raise UpdateError(f"refusing to wipe slot {slot}: it is the running or the committed release")
        path = self.path(slot)
        remove_tree(path)
        path.mkdir(mode=0o755)
        fsync_dir(path.parent)

    def link_venv(self, slot: str, venv_key: str) -> None:
        atomic_symlink(self.path(slot) / "venv", f"../../venvs/{venv_key}")

    def write_meta(self, slot: str, meta: dict[str, Any], manifest_raw: bytes, signature: bytes) -> None:
        """Record the install; slot.json is written last and marks the slot complete."""
        d = self.path(slot) / META_DIR
        d.mkdir(mode=0o755, exist_ok=True)
        atomic_write_bytes(d / "MANIFEST.json", manifest_raw)
        atomic_write_bytes(d / "MANIFEST.sig", signature)
        atomic_write_json(d / "slot.json", meta)

    def manifest_raw(self, slot: str) -> bytes | None:
        try:
            return (self.path(slot) / META_DIR / "MANIFEST.json").read_bytes()
        except OSError:
            return None

    def verify(self, slot: str) -> list[str]:
        """Problems with a slot's files compared with its manifest (empty: intact)."""
        meta = self.meta(slot)
        if meta is None:
            return [f"slot {slot} holds no complete install"]
        raw = self.manifest_raw(slot)
        try:
            doc = json.loads(raw or b"")
            files = doc["files"]
        except (ValueError, KeyError, TypeError):
            return [f"slot {slot}: its manifest is missing or unreadable"]
        problems: list[str] = []
        base = self.path(slot)
        for f in files:
            p = base / f["path"]
            if p.is_symlink() or not p.is_file():
                problems.append(f"{p} is missing")
                continue
            h = hashlib.sha256()
            with p.open("rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
            if h.hexdigest() != f["sha256"]:
                problems.append(f"{p} was modified (sha256 {h.hexdigest()[:12]}..., expected {f['sha256'][:12]}...)")
            if len(problems) >= 5:
                break
        if not (base / "venv" / "bin" / "python").exists():
            problems.append(f"slot {slot} has no Python environment ({base / 'venv'} does not lead to a venv)")
        return problems
