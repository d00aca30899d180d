"""Sending a file to a reader in signed chunks (firmware bundle, gallery snapshot), resuming after a dropped link.

The backend's half of :mod:`firmware_py.mqtt.commands.transfer`:

    with CommandSession(brokers, site, device, backend_key) as s:
        result = send_file(s, "firmware", bundle_bytes, meta={"version": "1.3.0"})

:func:`send_file` begins the transfer (a reader that already holds part of it
answers with what is missing), sends only the missing chunks, asks for the
status to catch any chunk whose result was lost, and commits. Run it again
after an interruption with the same ``transfer_id``: it resumes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_py.backend.commands import command_claims, sign_command
from firmware_py.errors import KaoclockError
from firmware_py.mqtt.link import BrokerUrl, LinkSettings, MqttLink, TlsFiles
from firmware_py.mqtt.topics import PREFIX, Topics

DEFAULT_CHUNK = 128 << 10


class TransferFailed(KaoclockError):
    """The reader refused a transfer step, or did not answer."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


class CommandSession:
    """One MQTT connection for many signed commands to one device, each result matched by command id."""

    def __init__(
        self,
        brokers: list[str],
        site: str,
        device: str,
        key: Ed25519PrivateKey,
        *,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
        prefix: str = PREFIX,
        client_id: str | None = None,
        ttl_s: float = 120.0,
    ) -> None:
        self.site, self.device, self.key, self.ttl_s = site, device, key, ttl_s
        self.topics = Topics(site, device, prefix)
        self._results: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.link = MqttLink(
            LinkSettings(
                brokers=[BrokerUrl.parse(b) for b in brokers],
                client_id=client_id or f"kaoclock-xfer-{site}-{device}"[:64],
                protocol="auto",
                tls=tls or TlsFiles(),
                username=username,
                password=password,
                clean_start=True,
                reconnect_min_s=0.5,
                reconnect_max_s=2.0,
            )
        )
        self.link.subscribe(self.topics.command_results, self._on_result, qos=1)

    def _on_result(self, _t: str, payload: bytes, _p: Any) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            with self._cond:
                self._results[obj["id"]] = obj
                self._cond.notify_all()

    def __enter__(self) -> CommandSession:
        self.link.start()
        if self.link.wait_connected(10.0) is None:
            self.link.stop()
            raise TransferFailed(f"cannot reach the broker ({self.link.state.last_error})")
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    def call(self, cmd: str, args: dict[str, Any], wait_s: float = 30.0) -> dict[str, Any] | None:
        """Sign and publish one command; its result, or None when none arrived within ``wait_s``."""
        claims = command_claims(self.site, self.device, cmd, args, ttl_s=self.ttl_s)
        token = sign_command(self.key, claims)
        if not self.link.publish(self.topics.commands, token.encode("ascii"), 1, False, content_type="application/jose"):
            return None
        end = time.monotonic() + wait_s
        with self._cond:
            while claims["id"] not in self._results:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._results.pop(claims["id"])


def _done(result: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if result is None:
        raise TransferFailed(f"{what}: no answer from the reader")
    if result.get("status") != "done":
        raise TransferFailed(f"{what}: {result.get('status')} ({result.get('reason')}): {result.get('detail')}", result)
    return result["result"] or {}


def _expand(missing: list[list[int]]) -> list[int]:
    return [i for a, b in missing for i in range(a, b + 1)]


def send_file(
    session: Any,
    kind: str,
    data: bytes,
    *,
    transfer_id: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    meta: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop_after: int | None = None,
    wait_s: float = 30.0,
) -> dict[str, Any]:
    """Send ``data`` as a ``kind`` transfer and commit it; returns the commit's result.

    ``session`` has ``call(cmd, args, wait_s)`` (a :class:`CommandSession`).
    ``stop_after`` sends at most that many chunks and returns the status
    without committing (to test and demonstrate resuming).
    """
    digest = hashlib.sha256(data).hexdigest()
    tid = transfer_id or f"{kind.replace('.', '-')}-{digest[:16]}"
    args = {"transfer_id": tid, "kind": kind, "size": len(data), "sha256": digest, "chunk_size": chunk_size}
    if meta:
        args["meta"] = meta
    begun = _done(session.call("transfer.begin", args, wait_s), "transfer.begin")
    sent = 0
    todo = _expand(begun["missing"])
    for _round in range(5):  # a chunk whose result was lost (or beyond a truncated list) shows up in the status
        for index in todo:
            if stop_after is not None and sent >= stop_after:
                return _done(session.call("transfer.status", {"transfer_id": tid}, wait_s), "transfer.status")
            part = data[index * chunk_size : (index + 1) * chunk_size]
            chunk_args = {
                "transfer_id": tid,
                "index": index,
                "data": base64.b64encode(part).decode("ascii"),
                "sha256": hashlib.sha256(part).hexdigest(),
            }
            for _attempt in range(5):
                result = session.call("transfer.chunk", chunk_args, wait_s)
                if result is None or result.get("reason") != "busy":
                    break
                time.sleep(0.5)
            got = _done(result, f"transfer.chunk {index}")
            sent += 1
            if progress is not None:
                progress(got["received"], got["chunks"])
        status = _done(session.call("transfer.status", {"transfer_id": tid}, wait_s), "transfer.status")
        if status["missing_count"] == 0:
            break
        todo = _expand(status["missing"])
    else:
        raise TransferFailed(f"transfer {tid}: chunks still missing after 5 rounds", status)
    return _done(session.call("transfer.commit", {"transfer_id": tid}, max(wait_s, 120.0)), "transfer.commit")
