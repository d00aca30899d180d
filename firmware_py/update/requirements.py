"""The Python dependencies a tree needs, and the key of the venv that provides them.

Standard library only: ``device/install.sh`` runs this with the system Python
before any virtual environment exists::

    python3 -m firmware_py.update.requirements pyproject.toml          # venv key
    python3 -m firmware_py.update.requirements pyproject.toml --list   # one requirement a line

Two trees whose ``[project] dependencies`` are the same (after normalising
spaces and case) share a venv; a different list needs a new one.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
import tomllib
from pathlib import Path


def read_requirements(pyproject: Path) -> list[str]:
    """``[project] dependencies`` of a pyproject.toml, normalised and sorted."""
    data = tomllib.loads(pyproject.read_text("utf-8"))
    deps = data.get("project", {}).get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ValueError(f"{pyproject}: [project] dependencies is not a list of strings")
    return normalise(deps)


def normalise(requirements: list[str]) -> list[str]:
    """PEP 503 names in lower case, no spaces in the version part; markers kept."""
    out = set()
    for req in requirements:
        spec, _, marker = req.partition(";")
        m = re.match(r"\s*([A-Za-z0-9._-]+)(.*)", spec)
        if not m:
            out.add(req.strip())
            continue
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        out.add(name + re.sub(r"\s+", "", m.group(2)) + (f"; {marker.strip()}" if marker.strip() else ""))
    return sorted(out)


def venv_key(requirements: list[str]) -> str:
    """Key of the venv for these requirements on this machine's Python and CPU."""
    doc = {
        "requirements": normalise(requirements),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "machine": platform.machine(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    reqs = read_requirements(Path(args[0]))
    if "--list" in args:
        print("\n".join(reqs))
    else:
        print(venv_key(reqs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
