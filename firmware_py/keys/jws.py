"""Compact JWS with EdDSA / Ed25519 (RFC 7515, RFC 8037): signing and strict verification.

Tokens carry an explicit ``typ`` (RFC 8725 section 3.11) so that a punch can
never be taken for a command or the other way round.  Verification refuses
anything that is not exactly a three-part EdDSA token signed by a known key,
and every refusal carries a machine-readable ``reason``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.keys.jwk import PublicKey, b64url_decode, b64url_encode, key_id

PUNCH_TYP = "kaoclock-punch+jwt"
COMMAND_TYP = "kaoclock-command+jwt"
RECEIPT_TYP = "kaoclock-receipt+jwt"

JwsReason = Literal["malformed", "unsigned", "unsupported_alg", "wrong_type", "unknown_key", "bad_signature"]


class JwsError(Exception):
    """A token was refused; ``reason`` is one of :data:`JwsReason`."""

    def __init__(self, reason: JwsReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _json_bytes(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False).encode("utf-8")


def sign(claims: Mapping[str, Any], key: Ed25519PrivateKey, typ: str, kid: str | None = None) -> str:
    """``claims`` as a compact JWS signed by ``key``; ``kid`` defaults to the key's thumbprint."""
    header = {"alg": "EdDSA", "kid": kid or key_id(key), "typ": typ}
    signing_input = b64url_encode(_json_bytes(header)) + "." + b64url_encode(_json_bytes(claims))
    signature = key.sign(signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


@dataclass(frozen=True)
class Verified:
    header: dict[str, Any]
    claims: dict[str, Any]
    key: PublicKey


def peek(token: str | bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a token *without* checking its signature (for reports only)."""
    parts = _split(token)
    return _decode_json(parts[0], "header"), _decode_json(parts[1], "payload")


def _split(token: str | bytes) -> list[str]:
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise JwsError("malformed", "not a compact JWS: not ASCII text") from None
    token = token.strip()
    parts = token.split(".")
    if len(parts) != 3:
        raise JwsError("malformed", f"not a compact JWS: {len(parts)} part(s), need header.payload.signature")
    return parts


def _decode_json(part: str, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(b64url_decode(part).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise JwsError("malformed", f"JWS {what} is not base64url-encoded JSON") from None
    except RecursionError:  # e.g. a header of 50,000 '[': an ordinary refusal, not a crash
        raise JwsError("malformed", f"JWS {what} is nested too deeply") from None
    if not isinstance(obj, dict):
        raise JwsError("malformed", f"JWS {what} is not a JSON object")
    return obj


def verify(token: str | bytes, keys: Mapping[str, PublicKey], typ: str) -> Verified:
    """Check ``token``'s form, ``typ``, algorithm, key and signature; return its header and claims.

    Raises :class:`JwsError`; never anything else for any input.
    """
    parts = _split(token)
    header = _decode_json(parts[0], "header")
    alg = header.get("alg")
    if alg in (None, "none", "") or parts[2] == "":
        raise JwsError("unsigned", "the token is not signed (alg 'none' or an empty signature)")
    if alg != "EdDSA":
        raise JwsError("unsupported_alg", f"alg {alg!r} is not accepted; only EdDSA (Ed25519)")
    if "crit" in header:
        raise JwsError("malformed", "JWS 'crit' header parameters are not supported")
    if header.get("typ") != typ:
        raise JwsError("wrong_type", f"typ {header.get('typ')!r} is not {typ!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise JwsError("unknown_key", f"signed by an unknown key (kid {kid!r})")
    try:
        signature = b64url_decode(parts[2])
    except ValueError:
        raise JwsError("malformed", "JWS signature is not base64url") from None
    pub = keys[kid]
    try:
        pub.key.verify(signature, (parts[0] + "." + parts[1]).encode("ascii"))
    except InvalidSignature:
        raise JwsError("bad_signature", f"signature does not verify under key {kid}") from None
    claims = _decode_json(parts[1], "payload")
    return Verified(header, claims, pub)
