"""Telemetry (R14): what a technician watching the fleet needs to know about one reader.

:class:`~firmware_py.telemetry.collector.TelemetryCollector` assembles a
snapshot from the system (CPU temperature and load, memory, disk, uptime,
clock sync), the outbox, and provider hooks the other packages fill: the
pipeline (fps, per-stage latency p50/p95, last face), the gallery (version,
size), the camera (state) and the models (versions).
:class:`~firmware_py.telemetry.latency.StageTimes` is a ready-made pipeline
provider.
"""
