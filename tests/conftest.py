"""Session setup shared by every test file.

pyproject.toml declares entry points (the reference model's ``uae-tiny`` and
``uae-reference`` under ``unified_bench.models``); importlib.metadata sees them only once the
distribution is (re)installed. When the installed metadata predates them (an editable install
made before they were added), the tests install them the way pip would: a temporary
``*.dist-info`` on sys.path and on PYTHONPATH for subprocesses. The pytest header says so;
``pip install -e .`` makes this a no-op.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

from dist_info import pyproject_entry_points, write_dist_info

_SHIM: dict[str, object] = {}


def _missing_entry_points() -> dict[str, dict[str, str]]:
    missing = {}
    for group, declared in pyproject_entry_points().items():
        installed = {(ep.name, ep.value) for ep in entry_points(group=group)}
        if any((name, value) not in installed for name, value in declared.items()):
            missing[group] = declared
    return missing


def pytest_configure(config) -> None:
    missing = _missing_entry_points()
    if not missing:
        return
    root = Path(tempfile.mkdtemp(prefix="unified-bench-entry-points-"))
    write_dist_info(root, "unified-bench-pyproject-entry-points", missing)
    sys.path.insert(0, str(root))
    _SHIM.update(root=root, pythonpath=os.environ.get("PYTHONPATH"), groups=sorted(missing))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))


def pytest_report_header(config) -> str | None:
    if not _SHIM:
        return None
    return (
        f"entry points {', '.join(_SHIM['groups'])} from pyproject.toml are not in the installed metadata: "
        f"using a temporary dist-info at {_SHIM['root']} (run `pip install -e .` to refresh)"
    )


def pytest_unconfigure(config) -> None:
    if not _SHIM:
        return
    root = str(_SHIM["root"])
    if root in sys.path:
        sys.path.remove(root)
    if _SHIM["pythonpath"] is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = str(_SHIM["pythonpath"])
    shutil.rmtree(root, ignore_errors=True)
    _SHIM.clear()
