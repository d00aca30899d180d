"""End-to-end receipts: the backend's signed word that punches are stored in its database.

A PUBACK only says the *broker* has a punch; a punch leaves the reader's
outbox when a receipt on ``<prefix>/<site>/<device>/receipts`` says the
backend has committed it.  A receipt is a compact JWS (EdDSA, typ
``kaoclock-receipt+jwt``) signed by the backend's key, the same key that
signs commands, with claims (mqtt/schemas/receipt-claims.schema.json)::

    {"v": 1, "id": "<uuid7>", "aud": "<site>/<device>", "iat": 1767225600, "ids": ["<punch id>", ...]}

It needs no expiry or nonce: it can only remove punches whose ids it names,
and punch ids are unique, so a replayed receipt names punches that are
already stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from firmware_py.keys.jwk import PublicKey
from firmware_py.keys.jws import RECEIPT_TYP, JwsError, verify

MAX_RECEIPT_BYTES = 64 * 1024
MAX_RECEIPT_IDS = 1000
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class ReceiptRefused(Exception):
    """A receipt was not accepted; ``reason`` is a short code (jws reasons, ``oversized``, ``wrong_device``, ``malformed``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def receipt_claims(site: str, device: str, ids: list[str], *, receipt_id: str, iat: int) -> dict[str, Any]:
    return {"v": 1, "id": receipt_id, "aud": f"{site}/{device}", "iat": iat, "ids": list(ids)}


def verify_receipt(payload: bytes, keys: Mapping[str, PublicKey], site: str, device: str) -> list[str]:
    """The punch ids a receipt for ``site``/``device`` confirms; raises :class:`ReceiptRefused`."""
    if len(payload) > MAX_RECEIPT_BYTES:
        raise ReceiptRefused("oversized", f"{len(payload)} bytes; a receipt is at most {MAX_RECEIPT_BYTES}")
    if not keys:
        raise ReceiptRefused("no_backend_key", "no trusted backend key is installed (`kaoclock keys trust-backend`)")
    try:
        claims = verify(payload, keys, RECEIPT_TYP).claims
    except JwsError as exc:
        raise ReceiptRefused(exc.reason, str(exc)) from None
    if claims.get("v") != 1:
        raise ReceiptRefused("malformed", f"receipt version {claims.get('v')!r} is not 1")
    if claims.get("aud") != f"{site}/{device}":
        raise ReceiptRefused("wrong_device", f"the receipt is for {claims.get('aud')!r}, this reader is {site}/{device}")
    ids = claims.get("ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_RECEIPT_IDS or not all(isinstance(i, str) and _ID.fullmatch(i) for i in ids):
        raise ReceiptRefused("malformed", f"'ids' must be a list of 1 to {MAX_RECEIPT_IDS} punch ids")
    return ids
