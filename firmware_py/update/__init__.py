"""Signed release bundles installed A/B, with a health check and automatic rollback.

The pieces, from the outside in:

* :mod:`.bundle` builds and verifies a release bundle: a tar holding the
  source tree and a manifest of file hashes signed with Ed25519.
* :mod:`.slots` keeps two install slots (``slots/a``, ``slots/b``) and the
  ``current`` / ``committed`` symlinks that say what runs and what is known good.
* :mod:`.state` is the small JSON file (written atomically) that records an
  update in progress, so an interrupted one is finished or undone at next start.
* :mod:`.updater` runs the sequence: verify, install into the inactive slot,
  switch, restart, health check, then commit or roll back.
* :mod:`.staging` receives a bundle in chunks (for the signed MQTT command).

This package's ``__init__`` and :mod:`.requirements` need only the standard
library, so the install script can use them before any venv exists.
"""
