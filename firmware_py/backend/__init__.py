"""The reference backend consumer: what an HR system does with the reader's punches.

* :mod:`~firmware_py.backend.registry` - the registered device public keys (JWK files per device)
* :mod:`~firmware_py.backend.verify` - checks one punch message: signature, key-to-device binding, claims
* :mod:`~firmware_py.backend.store` - SQLite store of punches (de-duplicated by punch id) and rejects
* :mod:`~firmware_py.backend.consumer` - MQTT 5 shared-subscription consumer
* :mod:`~firmware_py.backend.attendance` - the attendance book per person and day
* :mod:`~firmware_py.backend.commands` - signing commands with the backend key

It lives in the package so that ``kaoclock backend ...`` can be tried
anywhere; nothing on the reader imports it.
"""
