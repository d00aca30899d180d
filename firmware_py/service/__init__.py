"""Running as a service: systemd readiness and watchdog, heartbeat, journald logs, the health check.

No C dependency: :mod:`.notify` speaks the sd_notify datagram protocol to
``$NOTIFY_SOCKET`` and :mod:`.logs` the journal's native protocol, both on
plain ``AF_UNIX`` sockets. The daemon builds a :class:`.runtime.ServiceRuntime`
from the config, calls ``ready()`` once its pipeline runs and
``frame_processed()`` for every frame; the watchdog is petted only while
frames keep coming.
"""
