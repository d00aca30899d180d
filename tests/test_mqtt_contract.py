"""The contract in mqtt/: AsyncAPI 3 document, JSON Schemas, event catalogue, broker examples, all in step with the code."""

from __future__ import annotations

import json
import re

import jsonschema
import yaml

from firmware_py.mqtt.event_catalogue import CATALOGUE
from firmware_py.paths import MQTT_CONTRACT
from firmware_py.topics import CHANNELS, Topics


def load_asyncapi() -> dict:
    return yaml.safe_load((MQTT_CONTRACT / "asyncapi.yaml").read_text())


def test_asyncapi_describes_every_channel_with_resolvable_schemas() -> None:
    doc = load_asyncapi()
    assert doc["asyncapi"].startswith("3.")
    channels = doc["channels"]
    assert set(channels) == set(CHANNELS)
    t = Topics("{site}", "{device}")
    for name, ch in channels.items():
        assert ch["address"] == getattr(t, name)
        assert set(ch["parameters"]) == {"site", "device"}
    ops = {op["channel"]["$ref"].rsplit("/", 1)[1]: op for op in doc["operations"].values()}
    assert set(ops) == set(CHANNELS)
    incoming = {"commands", "receipts"}
    assert all(ops[c]["action"] == "receive" for c in incoming) and all(ops[c]["action"] == "send" for c in CHANNELS if c not in incoming)
    assert ops["punch"]["bindings"]["mqtt"]["qos"] == 1 and ops["status"]["bindings"]["mqtt"]["retain"] is True
    refs = re.findall(r"'\./schemas/([\w.-]+)'", (MQTT_CONTRACT / "asyncapi.yaml").read_text())
    on_disk = {p.name for p in (MQTT_CONTRACT / "schemas").glob("*.json")}
    assert set(refs) <= on_disk
    assert on_disk - set(refs) == {"jws-header.schema.json"}  # described in the punch and command messages' text
    for name in on_disk:
        jsonschema.Draft202012Validator.check_schema(json.loads((MQTT_CONTRACT / "schemas" / name).read_text()))


def test_event_catalogue_is_documented_everywhere() -> None:
    asyncapi = (MQTT_CONTRACT / "asyncapi.yaml").read_text()
    readme = (MQTT_CONTRACT / "README.md").read_text()
    for name, et in CATALOGUE.items():
        row = f"| `{name}` | {et.severity} |"
        assert row in asyncapi and row in readme, name
    pattern = re.compile(json.loads((MQTT_CONTRACT / "schemas" / "event.schema.json").read_text())["properties"]["type"]["pattern"])
    assert all(pattern.fullmatch(n) for n in CATALOGUE)


def test_acl_example_covers_each_device_channel() -> None:
    acl = (MQTT_CONTRACT / "mosquitto" / "acl.example").read_text()
    for channel in CHANNELS:
        mode = "read" if channel in ("commands", "receipts") else "write"
        assert f"pattern {mode} kaoclock/v1/+/%u/{channel}" in acl
    conf = (MQTT_CONTRACT / "mosquitto" / "mosquitto.conf.example").read_text()
    for line in ("require_certificate true", "use_identity_as_username true", "allow_anonymous false", "persistence true"):
        assert line in conf


def _emitted_event_names() -> dict[str, set[str]]:
    """Every event type the code can put on the bus, read from the source: literal first arguments of
    ``emit_new`` / ``_emit`` / ``emit`` / ``Event``, the serial services' ``<name>.<suffix>``, the update reporter's table."""
    import ast

    from firmware_py.update.remote import REPORTED

    root = MQTT_CONTRACT.parent / "firmware_py"
    found: dict[str, set[str]] = {}
    serial_names: set[str] = set()
    serial_suffixes: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            first = node.args[0]
            literal = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
            if name == "SerialService" and literal:
                serial_names.add(literal)
            elif name == "_emit" and path.name == "port_reader.py" and path.parent.name == "serial":
                if literal:
                    serial_suffixes.add(literal)
            elif name in ("emit_new", "_emit", "emit", "Event") and literal:
                found.setdefault(literal, set()).add(str(path.relative_to(root)))
    for svc in serial_names:
        for suffix in serial_suffixes:
            found.setdefault(f"{svc}.{suffix}", set()).add("serial/port_reader.py")
    for event_type, _severity in REPORTED.values():
        found.setdefault(event_type, set()).add("update/remote.py")
    return found


def test_every_event_the_code_emits_is_catalogued() -> None:
    emitted = _emitted_event_names()
    # The scan sees the events this brief added, and the gallery's model-mismatch warning.
    assert {"gallery.model_mismatch", "gallery.enrol_live_pending", "transfer.progress", "update.committed", "console.port_lost"} <= set(emitted)
    missing = {name: sorted(where) for name, where in emitted.items() if name not in CATALOGUE}
    assert not missing, f"emitted but not in firmware_py/mqtt/event_catalogue.py (and mqtt/README.md, asyncapi.yaml): {missing}"
