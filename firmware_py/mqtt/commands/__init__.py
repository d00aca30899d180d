"""Signed commands from the backend: verification, replay protection, a registry of handlers.

Every command is a compact JWS signed by the backend's Ed25519 key, addressed
to one device (``aud``), with an expiry and a nonce.  The daemon fills a
:class:`~firmware_py.mqtt.commands.registry.CommandRegistry` with handlers
(``registry.register("door.open", handler)``); later packages add theirs
(gallery sync, firmware update) the same way.
"""

from firmware_py.mqtt.commands.registry import CommandContext, CommandRefused, CommandRegistry

__all__ = ["CommandContext", "CommandRefused", "CommandRegistry"]
