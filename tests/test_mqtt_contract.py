"""The contract in mqtt/: AsyncAPI 3 document, JSON Schemas, event catalogue, broker examples, all in step with the code."""

from __future__ import annotations

import json
import re

import jsonschema
import yaml

from firmware_py.mqtt.event_catalogue import CATALOGUE
from firmware_py.mqtt.topics import CHANNELS, Topics
from firmware_py.paths import MQTT_CONTRACT


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
    assert ops["commands"]["action"] == "receive" and all(ops[c]["action"] == "send" for c in CHANNELS if c != "commands")
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
        mode = "read" if channel == "commands" else "write"
        assert f"pattern {mode} kaoclock/v1/+/%u/{channel}" in acl
    conf = (MQTT_CONTRACT / "mosquitto" / "mosquitto.conf.example").read_text()
    for line in ("require_certificate true", "use_identity_as_username true", "allow_anonymous false", "persistence true"):
        assert line in conf
