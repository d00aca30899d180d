"""Model files: the manifest, fetching pinned artefacts, sha256 checks, LiteRT loading."""

from firmware_py.models.manifest import Manifest, ModelEntry, ModelError, load_manifest

__all__ = ["Manifest", "ModelEntry", "ModelError", "load_manifest"]
