"""Helpers shared by the update and service tests: a real reader layout in a temp dir.

A "reader" here is the real thing minus systemd: a slots root with slots a/b
and the current/committed links, a data dir, a config file, a release key
pair, and the first release installed from a copy of this source tree. Its
venv is the test run's own (adopted, as install.sh --venv does), so the health
check of every slot runs in a real subprocess with the real models.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.update.bundle import build_bundle, select_tree_files
from firmware_py.update.signing import public_pem
from firmware_py.update.updater import Settings, Updater

REPO = Path(__file__).resolve().parent.parent
# One release key for the test session's readers, so plain bundles can be built once and shared.
SESSION_KEY = Ed25519PrivateKey.generate()
_PLAIN_BUNDLES: dict[str, Path] = {}
_CACHE_DIR = Path(tempfile.mkdtemp(prefix="kaoclock-test-bundles-"))
atexit.register(shutil.rmtree, _CACHE_DIR, True)


def copy_release_tree(dest: Path, version: str | None = None) -> Path:
    """The files a release of this checkout holds, copied to ``dest`` (no .git: a plain tree)."""
    for rel in select_tree_files(REPO):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    if version:
        set_version(dest, version)
    return dest


def set_version(tree: Path, version: str) -> None:
    init = tree / "firmware_py" / "__init__.py"
    text = init.read_text()
    start = text.index("__version__")
    end = text.index("\n", start)
    init.write_text(text[:start] + f'__version__ = "{version}"' + text[end:])


class RecordingControl:
    """A service control that records restarts (the injectable restart of the updater)."""

    description = "test control"

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.restarts = 0

    def restart(self) -> tuple[bool, str]:
        self.restarts += 1
        return self.ok, "" if self.ok else "the unit failed to start (test)"

    def running(self) -> tuple[bool | None, str]:
        return None, ""


@dataclass
class Reader:
    root: Path
    key: Ed25519PrivateKey
    images: Path
    messages: list[str] = field(default_factory=list)
    counter: int = 0

    @property
    def opt(self) -> Path:
        return self.root / "opt"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "kaoclock.toml"

    @property
    def pubkey(self) -> Path:
        return self.root / "release.pub"

    def write_config(self, **update: object) -> None:
        extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in update.items())
        self.config.write_text(
            f'[device]\ndata_dir = "{self.data}"\n\n[camera]\nsource = "{self.images}"\n\n'
            f'[update]\nslots_root = "{self.opt}"\npublic_key = "{self.pubkey}"\nservice = ""\nhealth_deadline = 60.0\n{extra}'
        )

    def settings(self, **kw: object) -> Settings:
        base = {"slots_root": self.opt, "state_dir": self.data / "update", "public_key": self.pubkey, "config_path": self.config}
        base.update(kw)
        return Settings(**base)  # type: ignore[arg-type]

    def updater(self, control: object | None = None, **kw: object) -> Updater:
        return Updater(self.settings(**kw), control or RecordingControl(), say=self.messages.append)  # type: ignore[arg-type]

    def tree(self, version: str, change: Callable[[Path], None] | None = None) -> Path:
        self.counter += 1
        tree = copy_release_tree(self.root / "trees" / f"{self.counter}-{version}", version)
        if change is not None:
            change(tree)
        return tree

    def bundle(self, version: str, change: Callable[[Path], None] | None = None, key: Ed25519PrivateKey | None = None, **kw: object) -> Path:
        """A bundle of this tree at ``version`` (changed by ``change``), signed by ``key`` (default: the reader's)."""
        self.counter += 1
        out = self.root / "bundles" / f"{self.counter}-kaoclock-{version}.bundle"
        out.parent.mkdir(parents=True, exist_ok=True)
        plain = change is None and key is None and not kw and self.key is SESSION_KEY
        if plain and version in _PLAIN_BUNDLES:
            shutil.copyfile(_PLAIN_BUNDLES[version], out)  # the same signed bytes, built once per session
            return out
        tree = self.tree(version, change)
        build_bundle(tree, out, key or self.key, source="test", **kw)  # type: ignore[arg-type]
        if plain:
            _PLAIN_BUNDLES[version] = _CACHE_DIR / out.name
            shutil.copyfile(out, _PLAIN_BUNDLES[version])
        return out

    def link(self, name: str) -> str | None:
        try:
            return os.readlink(self.opt / name).split("/")[-1]
        except OSError:
            return None

    def kaoclock(self, *args: str, via: str = "current", env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a slot's own launcher, as the unit does (``via``: current, committed, or a slot name)."""
        launcher = (self.opt / via if via in ("current", "committed") else self.opt / "slots" / via) / "device" / "bin" / "kaoclock"
        return subprocess.run(
            [str(launcher), *args, "--config", str(self.config)], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
        )


def make_reader(root: Path, photo: Path) -> Reader:
    """A reader with release 0.1.0 of this tree installed and committed in slot a."""
    root.mkdir(parents=True, exist_ok=True)
    images = root / "camera"
    images.mkdir()
    for i in range(3):
        shutil.copy(photo, images / f"frame{i}.jpg")
    key = SESSION_KEY
    reader = Reader(root, key, images)
    reader.pubkey.write_bytes(public_pem(key.public_key()))
    reader.write_config()
    tree = copy_release_tree(root / "trees" / "0-0.1.0", "0.1.0")
    outcome = reader.updater().init(tree, venv=Path(sys.prefix))
    assert outcome.action == "installed", outcome
    return reader


def add_bogus_runtime_model(tree: Path) -> None:
    """A runtime model whose pinned sha256 is right (the bundle signs it) but which is no TFLite model."""
    data = bytes(range(256)) * 40
    (tree / "models" / "bogus.tflite").write_bytes(data)
    (tree / "models" / "bogus.toml").write_text(
        f'[models.bogus]\nrole = "runtime"\nlocation = "tree"\nfile = "bogus.tflite"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
        'licence = "none"\nversion = "bogus-1"\n'
    )
