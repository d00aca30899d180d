"""Punches: what the reader records for each accepted recognition.

:class:`~firmware_py.punch.recorder.SignedPunchRecorder` implements the
:class:`~firmware_py.decision.ports.PunchRecorder` port: it turns an accepted
:class:`~firmware_py.decision.outcome.Decision` into signed claims (a compact
JWS under the device's Ed25519 key) and makes them durable in the outbox in
one transaction, together with the device's monotonic sequence number.
"""
