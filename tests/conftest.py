"""Shared fixtures.

Real inputs only: the fetched model files, photos that ship inside PyPI
packages (matplotlib's grace_hopper.jpg, scikit-image's astronaut.png), and
the shared face data set when ``KAOCLOCK_DATA`` points at it.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pytest

if TYPE_CHECKING:
    from firmware_py.vision.detector import FaceDetector
    from firmware_py.vision.landmarks import FaceMesh


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `converter` need TensorFlow, which has no wheel for every board (aarch64)."""
    if importlib.util.find_spec("tensorflow") is not None:
        return
    skip = pytest.mark.skip(reason=f"needs TensorFlow (the `models` extra), not installed here ({platform.machine()})")
    for item in items:
        if "converter" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own device state directory, never the user's."""
    home = tmp_path_factory.mktemp("kaoclock-home")
    monkeypatch.setenv("KAOCLOCK_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The directory `kaoclock models fetch` filled (device/bootstrap.sh --dev does it)."""
    from firmware_py.config import load

    d = load(None).models.dir
    from firmware_py.models.manifest import load_manifest

    manifest = load_manifest()
    missing = [m.name for m in manifest.select() if m.location == "fetched" and not m.path(d).is_file()]
    if missing:
        pytest.fail(f"models {missing} are not fetched into {d}: run device/bootstrap.sh --dev")
    return d


@pytest.fixture(scope="module")
def detector(models_dir: Path) -> FaceDetector:
    """The BlazeFace detector with its default settings (faces of 40 px and more)."""
    from firmware_py.models.manifest import load_manifest
    from firmware_py.vision.detector import FaceDetector

    return FaceDetector(load_manifest().require("blazeface_short_range", models_dir))


@pytest.fixture(scope="module")
def mesh(models_dir: Path) -> FaceMesh:
    """The FaceMesh landmark model."""
    from firmware_py.models.manifest import load_manifest
    from firmware_py.vision.landmarks import FaceMesh

    return FaceMesh(load_manifest().require("facemesh", models_dir))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real-face data set; tests that need it skip without it."""
    env = os.environ.get("KAOCLOCK_DATA")
    if not env:
        pytest.skip("KAOCLOCK_DATA is not set (point it at the shared face data set)")
    root = Path(env)
    if not root.is_dir():
        pytest.fail(f"KAOCLOCK_DATA={env} is not a directory")
    return root


@pytest.fixture(scope="session")
def grace_hopper_path() -> Path:
    """A real portrait photo (512x600 JPEG) that ships inside matplotlib."""
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="session")
def grace_hopper(grace_hopper_path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(grace_hopper_path).convert("RGB"))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real portrait photo (512x512 RGB) that ships inside scikit-image."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture
def mosquitto(tmp_path: Path):
    """A real mosquitto on a free loopback port (plain listener), stopped after the test."""
    from firmware_py.devtools.broker import LocalBroker

    broker = LocalBroker(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


class ContractChecker:
    """Checks a published MQTT message against the contract in mqtt/ (JSON Schemas, JWS header and claims)."""

    JSON_CHANNELS: ClassVar[dict[str, str]] = {
        "status": "status.schema.json",
        "telemetry": "telemetry.schema.json",
        "events": "event.schema.json",
        "command_results": "command-result.schema.json",
    }
    JWS_CHANNELS: ClassVar[dict[str, str]] = {
        "punch": "punch-claims.schema.json",
        "commands": "command-claims.schema.json",
        "receipts": "receipt-claims.schema.json",
    }

    def __init__(self) -> None:
        import json

        import jsonschema

        from firmware_py.paths import MQTT_CONTRACT

        self._json = json
        self.validators = {}
        for path in sorted((MQTT_CONTRACT / "schemas").glob("*.schema.json")):
            schema = json.loads(path.read_text())
            jsonschema.Draft202012Validator.check_schema(schema)
            self.validators[path.name] = jsonschema.Draft202012Validator(schema)
        self.checked: dict[str, int] = {}

    def check(self, topic: str, payload: bytes) -> dict:
        """Validate one message; return its JSON object (the claims for a JWS)."""
        from firmware_py.keys.jws import peek
        from firmware_py.topics import parse_topic

        where = parse_topic(topic)
        assert where is not None, f"{topic} is not a kaoclock/v1/<site>/<device>/<channel> topic"
        channel = where[2]
        if channel in self.JWS_CHANNELS:
            header, obj = peek(payload)
            self.validators["jws-header.schema.json"].validate(header)
            self.validators[self.JWS_CHANNELS[channel]].validate(obj)
        else:
            assert channel in self.JSON_CHANNELS, f"no schema for channel {channel}"
            obj = self._json.loads(payload)
            self.validators[self.JSON_CHANNELS[channel]].validate(obj)
        assert (obj["site"], obj["device"]) == (where[0], where[1]) if "site" in obj else obj["aud"] == f"{where[0]}/{where[1]}"
        self.checked[channel] = self.checked.get(channel, 0) + 1
        return obj

    def check_all(self, messages: list[tuple[str, bytes, bool]]) -> None:
        for topic, payload, _retain in messages:
            if payload:  # an empty retained message clears a topic
                self.check(topic, payload)


@pytest.fixture(scope="session")
def contract() -> ContractChecker:
    """Validates published messages against the MQTT contract's JSON Schemas."""
    return ContractChecker()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL (Debian's package) in a temporary directory on a free loopback port, for the session."""
    from firmware_py.devtools.postgres import LocalPostgres, PostgresMissing

    try:
        server = LocalPostgres()
    except PostgresMissing as exc:
        pytest.skip(str(exc))
    server.start()
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL."""
    return postgres_server.new_database()
