"""The package's layers: each package imports only the layers below it, and the core no hardware library.

The layer order is stated once, here, and mirrored by the package map in README.md
("Package map"). What runs on the reader (the runtime layers) never imports what only
measures, trains, converts or serves the backend (``APART``); those may use any runtime
package; the command line sits on top of everything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import firmware_py

PKG = Path(firmware_py.__file__).parent

# Runtime layers, lowest first. A package may import packages of lower layers only.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("base", frozenset({"__init__", "errors", "events", "fsutil", "paths", "progress", "timefmt", "topics", "worker"})),
    ("configuration", frozenset({"config"})),
    ("keys, models, outbox", frozenset({"keys", "models", "outbox"})),
    ("capture and telemetry", frozenset({"capture", "telemetry"})),
    ("vision", frozenset({"vision"})),
    ("gallery", frozenset({"gallery"})),
    ("decision", frozenset({"decision"})),
    ("liveness, punch, pins, MQTT", frozenset({"liveness", "punch", "gpio", "mqtt"})),
    ("pipeline, gate, service", frozenset({"pipeline", "gate", "service"})),
    ("update, serial", frozenset({"update", "serial"})),
    ("provisioning", frozenset({"provision"})),
    ("wiring", frozenset({"compose"})),
    ("composition root", frozenset({"reader", "demo_assets"})),
    ("demo", frozenset({"demo"})),
)
# Apart from the reader: the HR backend, benchmarks, evaluations and training, the model converter, dev tools.
APART = frozenset({"backend", "bench", "eval", "convert", "devtools"})
ENTRY = frozenset({"cli", "__main__"})
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
    for package in CORE:
        for py in sorted((PKG / package).rglob("*.py")) if (PKG / package).is_dir() else []:
            checked += 1
            for mod in imported_modules(py):
                if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN):
                    # config/sections/gpio.py may use the pure-Python pin map (no gpiozero in it).
                    if mod == "firmware_py.config.pinmap":
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


def package_imports() -> dict[str, dict[str, set[str]]]:
    """{package: {imported package: {files that import it}}} over every module, lazy imports included."""
    out: dict[str, dict[str, set[str]]] = {}
    for py in sorted(PKG.rglob("*.py")):
        rel = py.relative_to(PKG)
        unit = rel.parts[0].removesuffix(".py")
        for mod in imported_modules(py):
            parts = mod.split(".")
            if parts[0] != "firmware_py" or len(parts) < 2:
                continue
            dst = "__init__" if parts[1] == "__version__" else parts[1]
            if dst != unit:
                out.setdefault(unit, {}).setdefault(dst, set()).add(str(rel))
    return out


def layer_problems(imports: dict[str, dict[str, set[str]]]) -> list[str]:
    rank = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
    problems = []
    for unit, targets in sorted(imports.items()):
        for dst, files in sorted(targets.items()):
            where = ", ".join(sorted(files))
            if unit in ENTRY:
                continue
            if unit in APART:
                if dst in ENTRY:
                    problems.append(f"{where}: {unit} (apart from the reader) imports the command line {dst}")
            elif dst in APART or dst in ENTRY:
                problems.append(f"{where}: runtime package {unit} imports {dst}, which only measures, trains or serves")
            elif unit not in rank or dst not in rank:
                problems.append(f"{where}: {unit} -> {dst}: put every package in a layer of tests/test_layers.py")
            elif rank[dst] >= rank[unit]:
                problems.append(f"{where}: {unit} (layer {LAYERS[rank[unit]][0]!r}) imports {dst} (layer {LAYERS[rank[dst]][0]!r}), not below it")
    return problems


def test_every_package_is_in_a_layer() -> None:
    units = {p.relative_to(PKG).parts[0].removesuffix(".py") for p in PKG.rglob("*.py")}
    placed = {u for _, us in LAYERS for u in us} | APART | ENTRY
    assert units - placed == set(), "place these in a layer (tests/test_layers.py and README.md's package map)"
    assert placed - units == set(), "these layers name packages that no longer exist"


def test_packages_import_only_lower_layers() -> None:
    imports = package_imports()
    assert sum(len(t) for t in imports.values()) > 50  # the scan sees the package's imports
    assert layer_problems(imports) == []


def test_the_layer_check_would_catch_an_upward_import() -> None:
    assert layer_problems({"vision": {"gallery": {"vision/x.py"}}})
    assert layer_problems({"gallery": {"eval": {"gallery/x.py"}}})
    assert layer_problems({"bench": {"cli": {"bench/x.py"}}})
    assert layer_problems({"nowhere": {"vision": {"nowhere.py"}}})
    assert not layer_problems({"gallery": {"vision": {"gallery/x.py"}}, "bench": {"backend": {"bench/x.py"}}, "cli": {"eval": {"cli/x.py"}}})


def test_the_scan_would_catch_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import serial\nfrom gpiozero import LED\n")
    assert {"serial", "gpiozero"} <= imported_modules(bad)
