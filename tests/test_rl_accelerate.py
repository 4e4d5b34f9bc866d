"""Both Unified-GRPO stages under ``accelerate launch`` with 2 CPU processes (issue 7, acceptance 5).

accelerate's ``--cpu`` flag starts one process unless it is given an MPI hostfile, so the
two ranks come from its torch launcher (``--multi_gpu``); without CUDA the trainer asks
accelerate for the CPU, which then joins the ranks over gloo. The test checks that the ranks
really formed one group: each writes a digest of its trained weights, and they are equal.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_g4u_and_u4g_under_accelerate_launch_with_two_cpu_processes(tmp_path):
    from uae_reference.presets import build_tiny_model

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_rl_stages import untrained_but_responsive

    checkpoint = tmp_path / "tiny"
    untrained_but_responsive(build_tiny_model(seed=0)).save_pretrained(checkpoint)
    out = tmp_path / "rl"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "uae_reference.rl.cli", "train", "--stage", "all", "--smoke",
        "--init-from", str(checkpoint), "--output-dir", str(out),
        "--set", "max_caption_tokens=12", "--no-progress", "--num-threads", "1",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("g4u", "u4g"):
        digests = {p.read_text() for p in (out / stage).glob("weights-rank*.sha256")}
        assert len(list((out / stage).glob("weights-rank*.sha256"))) == 2, f"{stage}: did both ranks join one group?"
        assert len(digests) == 1, f"{stage}: ranks ended with different weights"
        assert (out / stage / "final" / "uae_config.json").is_file()
        with open(out / stage / "log.csv", newline="") as handle:
            assert len(list(csv.DictReader(handle))) == 3
    assert (out / "curves.csv").is_file() and (out / "curves.png").is_file()
