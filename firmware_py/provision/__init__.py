"""Bringing a reader up: identity, key, config, trusted backend key, passphrase.

:func:`~firmware_py.provision.device.provision` is what ``kaoclock provision``
runs; it can be re-run safely (what is already in place is kept and reported
as such, a conflicting key or config is refused, never replaced silently).
"""
