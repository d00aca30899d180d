"""Release bundles: the source tree a reader runs, a manifest of file hashes, an Ed25519 signature.

A bundle is a tar (gzip-compressed) whose members are, in this order:

``MANIFEST.json``
    format, version, created, Python requirements, and for every file its
    path, size, sha256 and mode (0644 or 0755);
``MANIFEST.sig``
    the base64 Ed25519 signature of the exact bytes of ``MANIFEST.json``;
``files/<path>``
    one regular file per manifest entry, nothing else.

:func:`verify_bundle` checks the signature first, then that the manifest is
sane (relative paths inside the allowed top-level folders, no ``..``, no
duplicates, sizes within limits), then streams every member and compares its
size and sha256; a member that is not a regular file (a symlink, a hard link,
a device) or not in the manifest is refused. Nothing is written while
verifying, so a forged, tampered or truncated bundle leaves the reader as it
was. :func:`extract_bundle` then writes the files into an empty slot,
hashing them again as they are written (the file could change between the two
reads).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.update.errors import BundleError
from firmware_py.update.requirements import normalise, read_requirements
from firmware_py.update.signing import TrustedKeys, key_id

FORMAT = "kaoclock-bundle/1"
MANIFEST_NAME = "MANIFEST.json"
SIGNATURE_NAME = "MANIFEST.sig"
FILES_PREFIX = "files/"

# What a bundle may hold: the layout the brief fixes, plus wheels for the venv.
TOP_DIRS = frozenset({"firmware_py", "models", "mqtt", "hw", "device", "wheels"})
TOP_FILES = frozenset({"pyproject.toml", "README.md", "LICENSE", "LICENSE.txt", "NOTICE"})
# Without these a slot cannot start, so a bundle lacking one is refused.
REQUIRED_FILES = ("pyproject.toml", "firmware_py/__init__.py", "firmware_py/__main__.py", "device/bin/kaoclock", "models/manifest.toml")
# Left out when a tree is walked (a git checkout uses `git ls-files` instead).
_SKIP_DIRS = frozenset({"__pycache__", ".venv", "venv", "build", "dist", ".pytest_cache", ".ruff_cache", ".mypy_cache"})
_SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".swp", "~")

VERSION_PATTERN = re.compile(r"\d+(\.\d+){1,3}([.+-][0-9A-Za-z.+-]+)?")
_MAX_MANIFEST_BYTES = 8 << 20
_MAX_FILES = 50_000
_MAX_PATH = 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile bundle from filling the disk or the memory."""

    max_bytes: int = 512 << 20
    max_files: int = _MAX_FILES


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    mode: int

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "mode": f"{self.mode:04o}"}


@dataclass(frozen=True)
class BundleManifest:
    """The signed description of a release."""

    version: str
    created: str
    requirements: tuple[str, ...]
    requires_python: str
    files: tuple[FileEntry, ...]
    key_id: str
    source: str = ""
    min_from_version: str | None = None
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def has_wheels(self) -> bool:
        return any(f.path.startswith("wheels/") and f.path.endswith(".whl") for f in self.files)

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": self.version,
            "created": self.created,
            "source": self.source,
            "min_from_version": self.min_from_version,
            "requires_python": self.requires_python,
            "requirements": list(self.requirements),
            "key_id": self.key_id,
            "files": [f.as_json() for f in self.files],
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes, limits: Limits = Limits()) -> BundleManifest:
        """Strictly parse signed manifest bytes; every unsafe entry is refused."""
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"bundle manifest is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else None
            raise BundleError(f"bundle format {found!r} is not {FORMAT!r}: not a kaoclock bundle, or a newer format")
        version = doc.get("version")
        if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
            raise BundleError(f"bundle version {version!r} is not a version such as 1.2.0")
        min_from = doc.get("min_from_version")
        if min_from is not None and (not isinstance(min_from, str) or not VERSION_PATTERN.fullmatch(min_from)):
            raise BundleError(f"bundle min_from_version {min_from!r} is not a version")
        reqs = doc.get("requirements")
        if not isinstance(reqs, list) or not all(isinstance(r, str) for r in reqs):
            raise BundleError("bundle manifest: requirements is not a list of strings")
        files_raw = doc.get("files")
        if not isinstance(files_raw, list) or not files_raw:
            raise BundleError("bundle manifest lists no files")
        if len(files_raw) > limits.max_files:
            raise BundleError(f"bundle lists {len(files_raw)} files, more than the limit {limits.max_files}")
        files: list[FileEntry] = []
        seen: set[str] = set()
        for item in files_raw:
            if not isinstance(item, dict):
                raise BundleError("bundle manifest: a file entry is not an object")
            path = check_path(item.get("path"))
            size, digest, mode = item.get("size"), item.get("sha256"), item.get("mode")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BundleError(f"bundle manifest: {path}: size {size!r} is not a byte count")
            if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise BundleError(f"bundle manifest: {path}: sha256 {digest!r} is not 64 hex digits")
            if mode not in ("0644", "0755"):
                raise BundleError(f"bundle manifest: {path}: mode {mode!r} is not 0644 or 0755")
            if path in seen:
                raise BundleError(f"bundle manifest lists {path} twice")
            seen.add(path)
            files.append(FileEntry(path, size, digest, int(mode, 8)))
        for f in files:  # a path that is a file cannot also be a folder of another entry
            for parent in PurePosixPath(f.path).parents:
                if str(parent) in seen:
                    raise BundleError(f"bundle manifest: {parent} is both a file and the folder of {f.path}")
        total = sum(f.size for f in files)
        if total > limits.max_bytes:
            raise BundleError(f"bundle unpacks to {total} bytes, more than the limit {limits.max_bytes} ([update] max_bundle_mb)")
        missing = [p for p in REQUIRED_FILES if p not in seen]
        if missing:
            raise BundleError(f"bundle lacks {', '.join(missing)}: a slot without them cannot start")
        return cls(
            version=version,
            created=str(doc.get("created", "")),
            requirements=tuple(normalise(reqs)),
            requires_python=str(doc.get("requires_python", "")),
            files=tuple(files),
            key_id=str(doc.get("key_id", "")),
            source=str(doc.get("source", "")),
            min_from_version=min_from,
            raw=raw,
        )


def check_path(path: Any) -> str:
    """A payload path that is safe to create under a slot, or BundleError."""
    if not isinstance(path, str) or not path:
        raise BundleError(f"bundle manifest: file path {path!r} is not a string")
    shown = path[:80]
    if len(path) > _MAX_PATH or "\x00" in path or "\\" in path:
        raise BundleError(f"bundle manifest: unsafe file path {shown!r}")
    p = PurePosixPath(path)
    if p.is_absolute():
        raise BundleError(f"bundle manifest: absolute file path {shown!r} refused")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BundleError(f"bundle manifest: file path {shown!r} escapes the slot or is not normalised")
    if any(len(part) > 255 for part in parts):
        raise BundleError(f"bundle manifest: a name in {shown!r} is longer than 255 bytes")
    top = parts[0]
    if (len(parts) == 1 and top not in TOP_FILES) or (len(parts) > 1 and top not in TOP_DIRS):
        raise BundleError(f"bundle manifest: {shown!r} is outside the release layout ({', '.join(sorted(TOP_DIRS | TOP_FILES))})")
    return path


def version_tuple(version: str) -> tuple[int, ...]:
    """The numeric release part (``1.2.0rc1`` -> (1, 2, 0)) for ordering versions."""
    m = re.match(r"(\d+(?:\.\d+)*)", version)
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def tree_version(tree: Path) -> str:
    """``__version__`` of the tree's firmware_py package."""
    text = (tree / "firmware_py" / "__init__.py").read_text("utf-8")
    m = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.M)
    if not m:
        raise BundleError(f"{tree}/firmware_py/__init__.py has no __version__")
    return m.group(1)


# ---------------------------------------------------------------- building


def select_tree_files(tree: Path) -> list[str]:
    """The tree's files that belong in a release: git-tracked ones in a checkout, else a filtered walk."""
    tree = tree.resolve()
    names: list[str] | None = None
    if (tree / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(tree), "ls-files", "-z"], check=True, capture_output=True).stdout
            names = [n for n in out.decode().split("\x00") if n]
        except (OSError, subprocess.CalledProcessError):
            names = None
    if names is None:
        names = []
        for top in sorted(TOP_FILES):
            if (tree / top).is_file():
                names.append(top)
        for top in sorted(TOP_DIRS - {"wheels"}):
            for dirpath, dirnames, filenames in os.walk(tree / top):
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".") and not d.endswith(".egg-info"))
                rel_dir = Path(dirpath).relative_to(tree)
                if rel_dir.parts[:2] == ("models", "build"):
                    continue
                for fn in sorted(filenames):
                    if not fn.startswith(".") and not fn.endswith(_SKIP_SUFFIXES):
                        names.append((rel_dir / fn).as_posix())
    selected = []
    for name in sorted(names):
        parts = name.split("/")
        if (len(parts) == 1 and parts[0] in TOP_FILES) or (len(parts) > 1 and parts[0] in TOP_DIRS - {"wheels"}):
            path = tree / name
            if path.is_symlink():
                raise BundleError(f"{path} is a symlink; a release holds regular files only (copy the file in)")
            if not path.is_file():
                raise BundleError(f"{path} is tracked by git but missing from the tree; commit or restore it")
            selected.append(name)
    return selected


def _file_entry(path: Path, rel: str) -> FileEntry:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
            size += len(block)
    mode = 0o755 if os.stat(path).st_mode & 0o111 else 0o644
    return FileEntry(rel, size, h.hexdigest(), mode)


def git_source(tree: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty", "--tags"], check=True, capture_output=True, text=True)
        return f"git {out.stdout.strip()}"
    except (OSError, subprocess.CalledProcessError):
        return "tree"


def describe_tree(tree: Path, wheels_dir: Path | None = None) -> tuple[list[tuple[Path, FileEntry]], str, list[str], str]:
    """(source path, entry) for every release file of ``tree``, its version, requirements and requires-python."""
    import tomllib

    files = [(tree / rel, _file_entry(tree / rel, rel)) for rel in select_tree_files(tree)]
    if wheels_dir is not None:
        wheels = sorted(wheels_dir.glob("*.whl"))
        if not wheels:
            raise BundleError(f"{wheels_dir} holds no .whl files")
        files += [(w, _file_entry(w, f"wheels/{w.name}")) for w in wheels]
    have = {e.path for _, e in files}
    missing = [p for p in REQUIRED_FILES if p not in have]
    if missing:
        tracked = " (a checkout's release holds only files tracked by git: commit them)" if (tree / ".git").exists() else ""
        raise BundleError(f"{tree} lacks {', '.join(missing)}{tracked}: not a kaoclock source tree")
    requires_python = tomllib.loads((tree / "pyproject.toml").read_text("utf-8")).get("project", {}).get("requires-python", "")
    return files, tree_version(tree), read_requirements(tree / "pyproject.toml"), requires_python


def build_bundle(
    tree: Path,
    out: Path,
    private_key: Ed25519PrivateKey,
    *,
    wheels_dir: Path | None = None,
    min_from_version: str | None = None,
    source: str | None = None,
) -> BundleManifest:
    """Write a signed bundle of ``tree`` to ``out`` (atomically) and return its manifest."""
    files, version, requirements, requires_python = describe_tree(tree, wheels_dir)
    if not VERSION_PATTERN.fullmatch(version):
        raise BundleError(f"tree version {version!r} is not a version such as 1.2.0 (firmware_py/__init__.py)")
    if min_from_version is not None and not VERSION_PATTERN.fullmatch(min_from_version):
        raise BundleError(f"--min-from {min_from_version!r} is not a version such as 1.2.0")
    now = time.time()
    manifest = BundleManifest(
        version=version,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        requirements=tuple(requirements),
        requires_python=requires_python,
        files=tuple(e for _, e in files),
        key_id=key_id(private_key.public_key()),
        source=source if source is not None else git_source(tree),
        min_from_version=min_from_version,
    )
    raw = manifest.to_bytes()
    signature = base64.b64encode(private_key.sign(raw)) + b"\n"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        # gzip level 6: nearly level 9's size (model files barely compress) in a fraction of the time.
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=6) as tar:
            for name, data in ((MANIFEST_NAME, raw), (SIGNATURE_NAME, signature)):
                info = _tarinfo(name, len(data), 0o644, now)
                tar.addfile(info, io.BytesIO(data))
            for src, entry in files:
                with src.open("rb") as fh:
                    tar.addfile(_tarinfo(FILES_PREFIX + entry.path, entry.size, entry.mode, now), fh)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BundleManifest.parse(raw)


def _tarinfo(name: str, size: int, mode: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


# ---------------------------------------------------------------- verifying


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature and every file hash have been checked."""

    path: Path
    manifest: BundleManifest
    signature: bytes
    signer: str
    sha256: str
    size: int


_CORRUPT = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn the many ways a damaged archive fails into one clear BundleError."""
    try:
        yield
    except _CORRUPT as exc:
        raise BundleError(f"bundle {path} is truncated or corrupt ({exc or type(exc).__name__}); copy or download it again") from None
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc.strerror or exc}") from None


def _members(path: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Stream the members of a bundle (callers read them inside :func:`_reading`)."""
    with path.open("rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
        for member in tar:
            yield member, tar


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isreg() or member.size > limit:
        raise BundleError(f"bundle member {member.name} is not a small regular file")
    fh = tar.extractfile(member)
    data = fh.read() if fh else b""
    if len(data) != member.size:
        raise BundleError(f"bundle member {member.name} is truncated")
    return data


def _stream_hash(tar: tarfile.TarFile, member: tarfile.TarInfo, sink: Callable[[bytes], object] | None = None) -> tuple[str, int]:
    fh = tar.extractfile(member)
    h = hashlib.sha256()
    n = 0
    while fh is not None and (block := fh.read(_CHUNK)):
        h.update(block)
        n += len(block)
        if sink is not None:
            sink(block)
    return h.hexdigest(), n


def _payload_member(member: tarfile.TarInfo, by_path: dict[str, FileEntry], seen: set[str]) -> FileEntry:
    """The manifest entry a tar member must match; anything else is refused."""
    name = member.name
    if not name.startswith(FILES_PREFIX):
        raise BundleError(f"bundle holds {name!r}, which is not a release file: refused")
    rel = name[len(FILES_PREFIX) :]
    entry = by_path.get(rel)
    if entry is None:
        raise BundleError(f"bundle holds {rel!r}, which its signed manifest does not list: the bundle was altered after signing")
    if not member.isreg():
        kind = "symlink" if member.issym() else "hard link" if member.islnk() else "device or special file" if not member.isdir() else "directory"
        raise BundleError(f"bundle member {rel!r} is a {kind}; only regular files are accepted")
    if rel in seen:
        raise BundleError(f"bundle holds {rel!r} twice: refused")
    if member.size != entry.size:
        raise BundleError(f"bundle file {rel} is {member.size} bytes, its signed manifest says {entry.size}: tampered")
    return entry


_Members = Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]


def _read_head(path: Path, trusted: TrustedKeys, limits: Limits) -> tuple[BundleManifest, bytes, str, _Members]:
    members = _members(path)
    try:
        m1, tar = next(members)
        if m1.name != MANIFEST_NAME:
            raise BundleError(f"{path} does not start with {MANIFEST_NAME}: not a kaoclock bundle")
        raw = _read_member(tar, m1, _MAX_MANIFEST_BYTES)
        m2, tar = next(members)
        if m2.name != SIGNATURE_NAME:
            raise BundleError(f"{path} has no {SIGNATURE_NAME} after its manifest: an unsigned bundle is refused")
        sig_text = _read_member(tar, m2, 1024)
    except StopIteration:
        raise BundleError(f"{path} is empty or truncated before its signature: not a usable bundle") from None
    try:
        signature = base64.b64decode(sig_text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{path}: {SIGNATURE_NAME} is not base64") from None
    claimed = None
    with contextlib.suppress(ValueError, AttributeError):
        claimed = json.loads(raw).get("key_id")
    signer = trusted.verify(raw, signature, claimed if isinstance(claimed, str) else None)
    manifest = BundleManifest.parse(raw, limits)
    return manifest, signature, signer, members


def _check_complete(path: Path) -> None:
    """Read a gzip bundle to its end: a cut-off trailer or a CRC error is refused even when every file verified."""
    with path.open("rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return
    with gzip.open(path, "rb") as gz:
        while gz.read(_CHUNK):
            pass


def verify_bundle(path: Path, trusted: TrustedKeys, limits: Limits = Limits()) -> VerifiedBundle:
    """Check a bundle completely without writing anything; BundleError names the first problem."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BundleError(f"bundle {path} does not exist") from None
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc.strerror}") from None
    if not path.is_file():
        raise BundleError(f"{path} is not a file")
    if st.st_size > limits.max_bytes:
        raise BundleError(f"bundle {path} is {st.st_size} bytes, more than the limit {limits.max_bytes} ([update] max_bundle_mb)")
    with _reading(path):
        manifest, signature, signer, members = _read_head(path, trusted, limits)
        by_path = {f.path: f for f in manifest.files}
        seen: set[str] = set()
        for member, tar in members:
            entry = _payload_member(member, by_path, seen)
            digest, n = _stream_hash(tar, member)
            if n != entry.size:
                raise BundleError(f"bundle file {entry.path} is truncated ({n} of {entry.size} bytes)")
            if digest != entry.sha256:
                raise BundleError(f"bundle file {entry.path} has sha256 {digest}, its signed manifest says {entry.sha256}: tampered")
            seen.add(entry.path)
        _check_complete(path)
    missing = sorted(set(by_path) - seen)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise BundleError(f"bundle {path} is truncated: {', '.join(missing[:3])}{more} missing; copy or download it again")
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return VerifiedBundle(path, manifest, signature, signer, h.hexdigest(), st.st_size)


def extract_bundle(bundle: VerifiedBundle, dest: Path, trusted: TrustedKeys, on_file: Callable[[int, int], None] | None = None) -> None:
    """Write a verified bundle's files into the empty directory ``dest``, re-hashing each one.

    ``on_file(i, n)`` is called after each file. The caller fsyncs the whole
    slot once at the end (one journal flush instead of one per file) before
    marking it complete. Raises BundleError if the bundle changed since it
    was verified.
    """
    with _reading(bundle.path):
        manifest, _sig, _signer, members = _read_head(bundle.path, trusted, Limits(max_bytes=max(bundle.manifest.total_size, bundle.size)))
        if manifest.raw != bundle.manifest.raw:
            raise BundleError(f"bundle {bundle.path} changed after it was verified: refused")
        by_path = {f.path: f for f in manifest.files}
        seen: set[str] = set()
        total = len(manifest.files)
        for member, tar in members:
            entry = _payload_member(member, by_path, seen)
            target = dest / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, entry.mode)
            with os.fdopen(fd, "wb") as out:
                digest, n = _stream_hash(tar, member, out.write)
            os.chmod(target, entry.mode)
            if n != entry.size or digest != entry.sha256:
                raise BundleError(f"bundle file {entry.path} changed after verification (sha256 {digest}): refused")
            seen.add(entry.path)
            if on_file is not None:
                on_file(len(seen), total)
    if seen != set(by_path):
        raise BundleError(f"bundle {bundle.path} lost files after verification: refused")


def copy_tree_files(tree: Path, dest: Path, on_file: Callable[[int, int], None] | None = None) -> BundleManifest:
    """Install a source checkout (no bundle, no signature) into ``dest``; used for a reader's first slot."""
    files, version, requirements, requires_python = describe_tree(tree)
    for i, (src, entry) in enumerate(files, 1):
        target = dest / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, entry.mode)
        with os.fdopen(fd, "wb") as out, src.open("rb") as fh:
            while block := fh.read(_CHUNK):
                out.write(block)
        os.chmod(target, entry.mode)
        if on_file is not None:
            on_file(i, len(files))
    return BundleManifest(
        version=version,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        requirements=tuple(requirements),
        requires_python=requires_python,
        files=tuple(e for _, e in files),
        key_id="",
        source=f"unsigned checkout {tree.resolve()} ({git_source(tree)})",
    )
