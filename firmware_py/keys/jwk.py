"""Ed25519 public keys as JWK (RFC 7517 / RFC 8037) and their thumbprints (RFC 7638).

A key's ``kid`` is its RFC 7638 thumbprint: derived from the key itself, so
it can never point at the wrong key, and any JOSE library can recompute it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from firmware_py.errors import ExitCode, KaoclockError

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
MAX_JWK_FILE_BYTES = 64 * 1024


class KeyFileError(KaoclockError):
    """A key file is missing, unreadable, malformed or not an Ed25519 key."""

    exit_code = ExitCode.USAGE


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding; raises ValueError on anything else."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def raw_public_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def thumbprint(x: str) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of an Ed25519 JWK with coordinate ``x``."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


def public_jwk(key: Ed25519PublicKey | Ed25519PrivateKey) -> dict[str, str]:
    """The public half of ``key`` as a JWK with ``kid`` (its thumbprint), ``alg`` and ``use``."""
    x = b64url_encode(raw_public_bytes(key))
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": thumbprint(x), "alg": "EdDSA", "use": "sig"}


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    return thumbprint(b64url_encode(raw_public_bytes(key)))


@dataclass(frozen=True)
class PublicKey:
    """A verified-well-formed Ed25519 public key and its ``kid``."""

    kid: str
    key: Ed25519PublicKey
    jwk: Mapping[str, Any]


def parse_public_jwk(obj: Any, where: str = "JWK") -> PublicKey:
    """Check and load one Ed25519 public JWK.

    A ``kid`` in the JWK must equal the key's thumbprint (a mislabelled key is
    refused rather than trusted under a wrong name); a JWK holding the private
    part ``d`` is refused so that a private key is never installed as a
    verifier by mistake.
    """
    if not isinstance(obj, dict):
        raise KeyFileError(f"{where}: expected a JSON object (a JWK), got {type(obj).__name__}")
    if "d" in obj:
        raise KeyFileError(f"{where}: contains a private key ('d'); give the public JWK (`keys export --jwk`)")
    if obj.get("kty") != "OKP" or obj.get("crv") != "Ed25519":
        raise KeyFileError(f"{where}: not an Ed25519 key (need kty 'OKP' and crv 'Ed25519', got {obj.get('kty')!r}/{obj.get('crv')!r})")
    if obj.get("alg", "EdDSA") != "EdDSA":
        raise KeyFileError(f"{where}: alg {obj.get('alg')!r} is not EdDSA")
    try:
        raw = b64url_decode(obj.get("x", ""))
    except ValueError:
        raise KeyFileError(f"{where}: 'x' is not base64url") from None
    if len(raw) != 32:
        raise KeyFileError(f"{where}: 'x' must hold 32 bytes, holds {len(raw)}")
    kid = thumbprint(obj["x"])
    if "kid" in obj and obj["kid"] != kid:
        raise KeyFileError(f"{where}: kid {obj['kid']!r} is not the key's RFC 7638 thumbprint {kid!r}; re-export the key with `keys export --jwk`")
    return PublicKey(kid, Ed25519PublicKey.from_public_bytes(raw), dict(obj))


def load_public_keys(path: Path) -> dict[str, PublicKey]:
    """Keys by ``kid`` from a file holding one JWK or a JWK Set (``{"keys": [...]}``)."""
    where = str(path)
    try:
        if path.stat().st_size > MAX_JWK_FILE_BYTES:
            raise KeyFileError(f"{where}: larger than 64 KiB; not a JWK file")
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{where}: does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{where}: cannot be read ({exc})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{where}: not JSON ({exc})") from None
    items = obj["keys"] if isinstance(obj, dict) and isinstance(obj.get("keys"), list) else [obj]
    if not items:
        raise KeyFileError(f"{where}: the key set is empty")
    keys = [parse_public_jwk(item, f"{where} key {i}") for i, item in enumerate(items)]
    return {k.kid: k for k in keys}
