"""Fixtures shared by several test files.

Helpers that are plain functions stay in their modules (``runner_helpers``, ``toy_metrics``,
``tiny_models``, ``tiny_hf_models``); only fixtures used by more than one file live here.
"""

from __future__ import annotations

import pytest
import toy_metrics

#: Variables that make the runner think it is one rank of a launched job (torchrun or slurm);
#: the same list ``runner_helpers.cli_env`` strips for subprocess runs.
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def toys(monkeypatch, tmp_path):
    """An in-process runner set up like ``runner_helpers.cli_env`` sets up a subprocess one.

    The toy metrics ``toy-pair`` and ``toy-embed`` replace registry entries (call counters
    reset), the reference cache lives under ``tmp_path/cache``, and no launcher variable from
    the calling environment can turn the run into one rank of a process group.
    """
    toy_metrics.register(monkeypatch, "toy-pair", "toy-embed")
    monkeypatch.setenv("UNIFIED_BENCH_CACHE", str(tmp_path / "cache"))
    for key in LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def shapes_metric():
    """The shapes-attr metric with its bundled oracle checkpoint (loaded once per module)."""
    from unified_bench.tracks.shapes.oracle import ShapesAttrMetric

    return ShapesAttrMetric(checkpoint="bundled")
