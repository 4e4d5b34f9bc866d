"""Acceptance 3: SIGKILL an eval at several points, resume, get the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runner_helpers import LAUNCHER, caption_ids_in_file, cli_env, essentials, make_images, run_cli

from unified_bench.scoring import ScoringConfig
from unified_bench.runner.eval import EvalConfig, run_eval


def finished_lines(out: Path) -> int:
    path = out / "captions.jsonl"
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


def start(args: list[str], tmp: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(LAUNCHER), *args], env=cli_env(tmp),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_after(proc: subprocess.Popen, out: Path, lines: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while finished_lines(out) < lines:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {lines} samples: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {lines} finished samples within {timeout} s")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # the process this test started, by its id
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_equals_uninterrupted(toys, tmp_path):
    data = make_images(tmp_path / "data", 8)
    common = ["eval", "--model", "mock", "--data", str(data), "--metrics", "toy-pair,toy-embed",
              "--model-arg", "size=32", "--model-arg", "slow_ms=250", "--seed", "4", "--no-progress", "--no-cache"]
    reference = tmp_path / "reference"
    run_eval(EvalConfig(model="mock", data=str(data), out=reference, metrics=["toy-pair", "toy-embed"],
                        model_args={"size": 32}, seed=4, scoring=ScoringConfig(metrics=(), use_cache=False), progress=False))

    out = tmp_path / "killed"
    proc = start([*common, "--out", str(out)], tmp_path)
    kill_after(proc, out, 1)
    proc = start([*common, "--out", str(out), "--resume"], tmp_path)
    kill_after(proc, out, 3)
    assert not (out / "results.json").exists()
    # batched this time, so the kill can land inside a batch's writes
    proc = start([*common, "--out", str(out), "--resume", "--batch-size", "3"], tmp_path)
    kill_after(proc, out, 5)
    run_cli([*common, "--out", str(out), "--resume", "--batch-size", "3"], tmp_path, timeout=300)

    ids = caption_ids_in_file(out)
    assert len(ids) == len(set(ids)) == 8, ids  # no duplicate rows
    results = json.loads((out / "results.json").read_text())
    assert len({s["sample_id"] for s in results["samples"]}) == len(results["samples"]) == 8
    assert not list((out / "images").glob(".*.tmp"))  # no temp files left behind
    assert essentials(out) == essentials(reference)
