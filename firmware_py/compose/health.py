"""The ``broker_or_outbox`` health check: can this release record punches and get them out?

Registered with :mod:`firmware_py.service.health` (listed in its
``HOOK_MODULES``), so the post-update health check of a new release runs it
in that release's own process:

* the outbox opens and answers (depth, oldest waiting punch);
* the gallery opens with its key, when there is one;
* with ``[mqtt] enabled``: a connection to the configured brokers with the
  device's own credentials (TLS files, user name), a status message published
  QoS 1 (not retained: the daemon's retained status stays) and its PUBACK
  received.  A broker that accepts it with 0x10 "no matching subscribers" is
  reachable; any error code, no CONNACK or no PUBACK within
  ``[mqtt] connect_timeout_s`` fails the check.

A failure here is not ``permanent`` (a broker may come back), so the updater
retries until its deadline, then rolls the release back.
"""

from __future__ import annotations

import threading
import time

from firmware_py.config import Config
from firmware_py.mqtt.device_link import link_settings
from firmware_py.mqtt.link import MqttLink
from firmware_py.mqtt.status import encode, status_payload
from firmware_py.outbox.store import Outbox
from firmware_py.service.health import Check, register
from firmware_py.topics import Topics


def check_broker_or_outbox(cfg: Config) -> Check:
    outbox = Outbox.from_config(cfg)
    try:
        st = outbox.stats()
    finally:
        outbox.close()
    parts = [f"outbox opens ({st.depth} waiting)"]
    from firmware_py.gallery.store import default_paths, open_from_config

    db, _key = default_paths(cfg)
    if db.exists() and db.stat().st_size > 0:
        store = open_from_config(cfg, create=False)
        try:
            parts.append(f"gallery opens (version {store.version}, {len(store.list_persons())} person(s))")
        finally:
            store.close()
    else:
        parts.append("no gallery yet")
    if not cfg.mqtt.enabled:
        return Check("broker_or_outbox", "ok", "; ".join(parts) + "; [mqtt] is off: no broker to check")
    problem = _publish_status(cfg)
    if problem is not None:
        return Check("broker_or_outbox", "fail", "; ".join(parts) + f"; but {problem}")
    return Check("broker_or_outbox", "ok", "; ".join(parts) + "; the broker took a status message (PUBACK)")


def _publish_status(cfg: Config) -> str | None:
    """None when a status message published with the device's credentials got its PUBACK, else what went wrong."""
    topics = Topics(cfg.device.site, cfg.device.id, cfg.mqtt.topic_prefix)
    settings = link_settings(cfg, topics)
    settings.client_id = (settings.client_id + "-health")[:64]  # never take over the running daemon's session
    settings.clean_start, settings.will = True, None
    settings.reconnect_min_s = settings.reconnect_max_s = 0.2
    timeout = cfg.mqtt.connect_timeout_s
    link = MqttLink(settings)
    link.start()
    try:
        if link.wait_connected(timeout) is None:
            return (
                f"no broker of {', '.join(str(b) for b in settings.brokers)} accepted the connection within {timeout:g} s ({link.state.last_error})"
            )
        acked = threading.Event()
        result: list[tuple[bool, str]] = []

        def on_ack(ok: bool, reason: str) -> None:
            result.append((ok, reason))
            acked.set()

        payload = encode(status_payload(cfg.device.site, cfg.device.id, "online", "health_check", protocol=link.protocol))
        deadline = time.monotonic() + timeout
        if not link.publish(topics.status, payload, 1, False, content_type="application/json", on_ack=on_ack):
            return "the connection dropped before the status could be published"
        if not acked.wait(max(0.1, deadline - time.monotonic())):
            return f"no PUBACK for the status message within {timeout:g} s"
        ok, reason = result[0]
        if not ok and "no matching subscribers" not in reason.lower():
            return f"the broker refused the status message: {reason}"
        return None
    finally:
        link.stop(2.0)


register("broker_or_outbox", check_broker_or_outbox)
