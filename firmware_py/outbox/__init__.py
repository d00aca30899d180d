"""The durable outbox: punches wait on disk until the broker acknowledges them.

:class:`~firmware_py.outbox.store.Outbox` (SQLite, WAL, synced, bounded) and
:class:`~firmware_py.outbox.drain.OutboxDrainer` (QoS 1, in order, deleted
only on PUBACK, resent after every reconnect or restart).
"""
