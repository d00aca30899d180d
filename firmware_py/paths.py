"""Where the source tree's own assets live (models/, mqtt/, hw/, device/).

kaoclock runs from its source tree (an editable install for development, an
A/B slot holding a release bundle on a reader), so the tree's asset folders
sit beside the ``firmware_py`` package.
"""

from __future__ import annotations

from pathlib import Path

TREE = Path(__file__).resolve().parent.parent
MODELS_TREE = TREE / "models"
MQTT_CONTRACT = TREE / "mqtt"
HW_DIR = TREE / "hw"
DEVICE_DIR = TREE / "device"
