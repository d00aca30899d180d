"""Ed25519 release keys: the vendor signs bundles, a reader holds only public keys.

Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public), readable by
``openssl pkey``. A key's id is the first 16 hex digits of the sha256 of its
raw 32-byte public key; it is written into each bundle so that a refusal can
say which key signed it and which keys the reader trusts. A trust file may
hold several public keys (concatenated PEM blocks) so that the release key
can be rotated: ship a release trusting old and new, then sign with the new.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware_py.update.errors import BundleError, UpdateError

_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_keypair(private_path: Path, public_path: Path, *, overwrite: bool = False) -> str:
    """Create a release key pair (private file 0600); refuses to replace an existing key."""
    for p in (private_path, public_path):
        if p.exists() and not overwrite:
            raise UpdateError(f"{p} already exists; refusing to replace a release key (move it away first if you really mean to)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(public_pem(key.public_key()))
    return key_id(key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The vendor's release signing key; a passphrase comes from $KAOCLOCK_RELEASE_KEY_PASSPHRASE."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UpdateError(f"cannot read the release key {path}: {exc.strerror}") from None
    passphrase = os.environ.get("KAOCLOCK_RELEASE_KEY_PASSPHRASE")
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        raise UpdateError(f"{path} is not a usable PEM private key ({exc}); create one with `kaoclock release keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UpdateError(f"{path} is not an Ed25519 key; create one with `kaoclock release keygen`")
    return key


@dataclass(frozen=True)
class TrustedKeys:
    """The release public keys a reader accepts bundles from."""

    keys: dict[str, Ed25519PublicKey]
    source: str

    @classmethod
    def load(cls, path: Path) -> TrustedKeys:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BundleError(
                f"no release public key at {path}: this reader cannot check bundles; "
                "install the vendor's release.pub there (or set [update] public_key)"
            ) from None
        except OSError as exc:
            raise BundleError(f"cannot read the release public key {path}: {exc.strerror}") from None
        keys: dict[str, Ed25519PublicKey] = {}
        for block in _PEM_PUBLIC.findall(data):
            try:
                pub = serialization.load_pem_public_key(block)
            except ValueError:
                continue
            if isinstance(pub, Ed25519PublicKey):
                keys[key_id(pub)] = pub
        if not keys:
            raise BundleError(f"{path} holds no Ed25519 public key (PEM 'BEGIN PUBLIC KEY'); use the release.pub from `kaoclock release keygen`")
        return cls(keys, str(path))

    @classmethod
    def of(cls, *public: Ed25519PublicKey) -> TrustedKeys:
        return cls({key_id(p): p for p in public}, "<in memory>")

    def verify(self, data: bytes, signature: bytes, claimed_key_id: str | None) -> str:
        """The id of the trusted key whose signature over ``data`` this is, or BundleError."""
        for kid, pub in self.keys.items():
            try:
                pub.verify(signature, data)
                return kid
            except InvalidSignature:
                continue
        trusted = ", ".join(sorted(self.keys))
        if claimed_key_id and claimed_key_id not in self.keys:
            raise BundleError(
                f"bundle is signed by release key {claimed_key_id}, but this reader trusts only {trusted} ({self.source}); "
                "use a bundle signed with the vendor's release key"
            )
        raise BundleError(
            f"bundle signature is not valid for any trusted release key ({trusted}): the bundle was forged or altered after signing; "
            "download it again from the vendor"
        )
