"""Installed-distribution metadata for tests: a ``*.dist-info`` with entry points, on a
temporary ``sys.path`` entry, exactly what ``pip install`` leaves for importlib.metadata."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pyproject_entry_points(pyproject: Path = REPO / "pyproject.toml") -> dict[str, dict[str, str]]:
    """``[project.entry-points.GROUP]`` tables of a pyproject.toml: group -> name -> value."""
    data = tomllib.loads(pyproject.read_text())
    return {group: dict(entries) for group, entries in data["project"].get("entry-points", {}).items()}


def write_dist_info(root: Path, name: str, entry_points: Mapping[str, Mapping[str, str]], version: str = "0.0.0") -> Path:
    """Write ``root/NAME-VERSION.dist-info`` declaring ``entry_points``; put ``root`` on
    sys.path (or PYTHONPATH) to install it."""
    root.mkdir(parents=True, exist_ok=True)
    dist = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in entries.items())
        lines.append("")
    (dist / "entry_points.txt").write_text("\n".join(lines))
    return dist
