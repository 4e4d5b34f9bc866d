"""Time a leaderboard build from 50 runs of 100 samples each (target: <= 60 s on 2 CPUs).

The runs are real run directories made through the real write path (``ScoreReport`` ->
``write_report``, PNG files on disk, captions.jsonl): 20 runs with the five extended metrics,
10 with the paper's four, 20 Shapes runs with sub-scores; all runs of a dataset share their
references, so every pair on a track is compared. Making the runs is not timed.

    .venv/bin/python benchmarks/leaderboard_build.py [--runs 50] [--samples 100] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the run-directory maker shared with the tests

from leaderboard_runs import EXTENDED, PAPER, SHAPES, make_run, write_references  # noqa: E402

from unified_bench.leaderboard import build_site  # noqa: E402


def make_runs(root: Path, runs: int, samples: int, size: int) -> Path:
    refs = write_references(root / "refs", samples, size=size)
    shape_refs = write_references(root / "shape-refs", samples, size=size, seed=1)
    out = root / "runs"
    shapes = runs * 2 // 5
    extended = (runs - shapes) * 2 // 3
    for index in range(runs):
        if index < extended:
            metrics, dataset, images = EXTENDED, "official", refs
        elif index < runs - shapes:
            metrics, dataset, images = PAPER, "official", refs
        else:
            metrics, dataset, images = SHAPES, "shapes", shape_refs
        make_run(
            out / f"run-{index:02d}",
            images,
            model=f"model-{index:02d}",
            run_id=f"bench-{index:02d}",
            metrics=metrics,
            quality=0.4 + 0.5 * ((index * 37) % 50) / 50,
            seed=index,
            dataset=dataset,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--size", type=int, default=64, help="side of the synthetic images in pixels")
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs and the site in this folder")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="lb-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        runs = make_runs(root, args.runs, args.samples, args.size)
        print(
            f"made {args.runs} runs x {args.samples} samples ({args.size}px) in {time.perf_counter() - started:.1f} s (not timed)"
        )
        entries = [REPO / "leaderboard" / "entries"]
        for label in ("first build (cold thumbnails)", "rebuild into the same folder"):
            started, cpu = time.perf_counter(), time.process_time()
            result = build_site([runs], entries, root / "site")
            total, cpu = time.perf_counter() - started, time.process_time() - cpu
            size = sum(p.stat().st_size for p in (root / "site").rglob("*") if p.is_file())
            print(
                f"\n{label}: {total:.2f} s wall, {cpu:.2f} s CPU in this process "
                f"({result.runs} runs, {result.reported} reported, {len(result.rejections)} rejected, "
                f"{result.files} files, {size / 1e6:.1f} MB)"
            )
            if label.startswith("first"):
                first = total
            for name, seconds in sorted(result.timings.items(), key=lambda kv: -kv[1]):
                print(f"  {name:<22} {seconds:7.2f} s")
            other = total - sum(result.timings.values())
            print(f"  {'other':<22} {other:7.2f} s")
        print(
            f"\ntarget <= 60 s for the first build: {'met' if first <= 60 else 'MISSED'} ({first:.2f} s); "
            f"machine load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
