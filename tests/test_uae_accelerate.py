"""Training under ``accelerate launch`` with two CPU processes: both ranks end with identical weights.

``accelerate launch --cpu --num_processes 2`` starts a single process unless it is given an MPI
hostfile, so the two ranks come from accelerate's torch launcher (``--multi_gpu`` with no GPU
visible); the trainer then asks accelerate for the CPU and the ranks join one gloo group
(the same recipe is in ``uae_reference/configs/cpu_2proc.yaml``). Each rank writes a digest of
its final weights; equal digests mean the gradients really were all-reduced.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "uae_reference.cli", "train", "--preset", "tiny", "--stage", "all", "--smoke",
        "--steps", "3", "--output-dir", str(out), "--num-threads", "1", "--no-progress",
        "--set", "train_samples=32", "--set", "save_every=2",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("sft", "vae", "decoder", "coldstart"):  # the recipe, chained, each stage under DDP
        digests = sorted((out / stage).glob("weights-rank*.sha256"))
        assert [p.name for p in digests] == ["weights-rank0.sha256", "weights-rank1.sha256"], f"{stage}: did both ranks run?"
        assert len({p.read_text() for p in digests}) == 1, f"{stage}: the ranks ended with different weights"
        assert (out / stage / "final" / "uae_config.json").is_file() and (out / stage / "state" / "step.json").is_file()
        with open(out / stage / "log.csv", newline="") as handle:
            assert [row["step"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
