"""Shared helpers of the runner tests: small real image folders, run readers, a CLI launcher
that first installs the toy metrics (so subprocess runs score without downloaded weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
VENV_BIN = Path(sys.executable).parent
LAUNCHER = TESTS / "runner_launch.py"


def make_images(folder: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """``count`` distinct smooth colour images named img00.png, img01.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        base = rng.integers(0, 256, size=(2, 2, 3)).astype(np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR)
        image.save(folder / f"img{index:02d}.png")
    return folder


def read_captions(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines() if line.strip()]
    return {row["sample_id"]: row for row in rows}


def caption_ids_in_file(out: Path) -> list[str]:
    return [json.loads(line)["sample_id"] for line in (out / "captions.jsonl").read_text().splitlines() if line.strip()]


def image_pixels(out: Path) -> dict[str, bytes]:
    return {p.stem: np.asarray(Image.open(p)).tobytes() for p in sorted((out / "images").glob("*.png"))}


def scores(out: Path) -> dict:
    data = json.loads((out / "results.json").read_text())
    return {
        "similarities": data["similarities_by_model"],
        "samples": [s["sample_id"] for s in data["samples"]],
        "errors": sorted((e["sample_id"], e["stage"]) for e in data["errors"]),
    }


def essentials(out: Path) -> dict:
    """What must not change with batching, sharding or interruption."""
    captions = {sid: (row["caption"], row["seed"]) for sid, row in read_captions(out).items()}
    return {"captions": captions, "images": image_pixels(out), "scores": scores(out)}


def cli_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["UNIFIED_BENCH_CACHE"] = str(tmp / "cache")
    env["COLUMNS"] = "400"  # rich wraps messages at the terminal width
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def run_cli(args: list[str], tmp: Path, *, timeout: float = 120, check_codes=(0,)) -> subprocess.CompletedProcess:
    """``unified-bench ARGS`` with the toy metrics installed, in a subprocess."""
    result = subprocess.run(
        [sys.executable, str(LAUNCHER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(tmp),
    )
    if check_codes is not None and result.returncode not in check_codes:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def torchrun_eval(args: list[str], tmp: Path, *, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=NPROC unified-bench eval ARGS`` (gloo on CPU)."""
    import shutil

    torchrun = VENV_BIN / "torchrun"
    env = cli_env(tmp)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [str(torchrun if torchrun.exists() else shutil.which("torchrun")), "--standalone", f"--nproc_per_node={nproc}",
         str(LAUNCHER), "eval", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
