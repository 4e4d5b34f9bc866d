"""The package's declared layers hold: import-linter's contracts in pyproject.toml pass.

The contracts are the architecture a reader relies on (cli on top, core at the bottom, nothing
importing upward; unified_bench reaching uae_reference only through the adapter registry's
entry point). A change that imports upward, or closes an import circle between two layers,
fails here with import-linter's report of the offending import chain.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "lint-imports"
    command = [str(script)] if script.is_file() else [shutil.which("lint-imports") or "lint-imports"]
    return subprocess.run([*command, "--no-cache", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_declared_layers_and_the_plugin_boundary_hold():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The check can fail: a copy of the package where core imports the runner is rejected."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "unified_bench", copy / "unified_bench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "uae_reference", copy / "uae_reference", ignore=shutil.ignore_patterns("__pycache__", "checkpoints"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    seeds = copy / "unified_bench" / "core" / "seeds.py"
    seeds.write_text(seeds.read_text() + "\nfrom unified_bench.runner import eval as _upward  # noqa\n")
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, '.'); from importlinter.cli import lint_imports_command; lint_imports_command()", "--no-cache"],
        capture_output=True, text=True, cwd=copy, timeout=300,
    )
    assert result.returncode != 0
    assert "unified_bench.core is not allowed to import unified_bench.runner" in result.stdout
