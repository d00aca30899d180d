"""MQTT at the edge: the link to the broker, the contract's topics, commands, events and telemetry publishing.

Nothing in the recognition core imports this package; the daemon builds a
:class:`~firmware_py.mqtt.device_link.DeviceLink` from the config and starts it.
The contract itself (AsyncAPI document, JSON Schemas, broker examples) lives
in the tree's top-level ``mqtt/`` folder.
"""
