"""The recognition core never imports gpiozero or pyserial (nor the edge packages that do)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import firmware_py

PKG = Path(firmware_py.__file__).parent
CORE = ["vision", "decision", "gallery", "pipeline", "liveness", "config"]
FORBIDDEN = ("gpiozero", "serial", "firmware_py.gpio", "firmware_py.serial", "firmware_py.gate", "lgpio", "RPi")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_packages_do_not_import_hardware_libraries() -> None:
    checked = 0
    offenders = []
    for room in CORE:
        for py in sorted((PKG / room).rglob("*.py")) if (PKG / room).is_dir() else []:
            checked += 1
            for mod in imported_modules(py):
                if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN):
                    # config/sections/gpio.py may use the pure-Python pin map (no gpiozero in it).
                    if mod == "firmware_py.gpio.pinmap":
                        continue
                    offenders.append(f"{py.relative_to(PKG)} imports {mod}")
    assert checked >= 10
    assert not offenders, offenders


def test_importing_the_core_loads_no_hardware_library() -> None:
    mods = [f"firmware_py.{r}" for r in CORE if (PKG / r).is_dir()]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in mods)
        + "from firmware_py.config import load, with_changes\n"
        + "with_changes(load(None), {'gpio.pins': {'relay': 12}})\n"
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gpiozero', 'serial', 'lgpio', 'RPi'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_scan_would_catch_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import serial\nfrom gpiozero import LED\n")
    assert {"serial", "gpiozero"} <= imported_modules(bad)
