"""Runner overhead: samples/s of the round-trip bookkeeping and I/O, metrics excluded.

Runs the ``mock`` adapter (cheap, deterministic) over a folder of 256 px images and times
``run_eval`` without scoring: reading references, hashing them, calling the adapter,
checking outputs, writing each PNG atomically and appending + fsyncing its JSONL line.
Compared in the same run with a naive loop that a first version might write: one sample at
a time, default PNG compression, and the whole captions file rewritten (and fsynced) after
every sample so that it is always complete.

Then the cost of cycles (``--cycles 3``): the runner's own time per cycle (its time less the
adapter's calls) of a three-cycle run against a one-cycle run's, measured in the same run,
interleaved. A later cycle reads the previous cycle's PNGs, hashes and verifies them, and
writes its own folder; the target is within 1.2x of a one-cycle run.

    python benchmarks/runner_overhead.py [--samples 200] [--repeats 5] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from unified_bench.adapters.mock import MockAdapter, MockConfig
from unified_bench.core.images import file_sha256, load_image
from unified_bench.runner.eval import EvalConfig, run_eval
from unified_bench.core.protocol import OFFICIAL_CAPTION_PROMPT
from unified_bench.core.seeds import seed_for


def make_references(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        corners = rng.integers(0, 256, size=(3, 3, 3)).astype(np.uint8)
        image = Image.fromarray(corners).resize((size, size), Image.Resampling.BILINEAR)
        image.save(folder / f"ref{index:04d}.png")


def ours(data: Path, out: Path, size: int, batch_size: int, durable: bool = True) -> tuple[float, float]:
    config = EvalConfig(
        model="mock", data=str(data), out=out, model_args={"size": size}, metrics=["ssim"],
        batch_size=batch_size, score=False, progress=False, durable=durable,
    )
    started, cpu = time.perf_counter(), time.process_time()
    outcome = run_eval(config)
    elapsed, cpu_used = time.perf_counter() - started, time.process_time() - cpu
    assert outcome.ok and outcome.finished == len(list(data.glob("*.png")))
    return outcome.finished / elapsed, outcome.finished / cpu_used


def own_times(data: Path, out: Path, size: int, cycles: int, batch_size: int = 16) -> list[float]:
    """The runner's own seconds per sample of each cycle: its time less the adapter calls'."""
    config = EvalConfig(
        model="mock", data=str(data), out=out, model_args={"size": size}, metrics=["ssim"],
        batch_size=batch_size, score=False, progress=False, cycles=cycles,
    )
    outcome = run_eval(config)
    assert outcome.ok
    per_cycle = outcome.cycles or [outcome]
    return [
        (o.timings["runner.total_s"] - o.timings["runner.caption_s"] - o.timings["runner.generate_s"]) / o.finished
        for o in per_cycle
    ]


def naive(data: Path, out: Path, size: int) -> tuple[float, float]:
    """One sample at a time; the full captions file rewritten and fsynced after each."""
    adapter = MockAdapter(MockConfig(size=size))
    (out / "images").mkdir(parents=True)
    records = []
    files = sorted(data.glob("*.png"))
    started, cpu = time.perf_counter(), time.process_time()
    for path in files:
        sample_id = path.stem
        seed = seed_for(0, sample_id)
        image = load_image(path)
        caption = adapter.caption([image], prompt=OFFICIAL_CAPTION_PROMPT, seeds=[seed])[0]
        generated = adapter.generate([caption], seeds=[seed], size=(size, size))[0]
        generated.save(out / "images" / f"{sample_id}.png")
        records.append({"sample_id": sample_id, "caption": caption, "seed": seed, "reference_sha256": file_sha256(path)})
        with open(out / "captions.json", "w") as handle:
            json.dump(records, handle)
            handle.flush()
            os.fsync(handle.fileno())
    return len(files) / (time.perf_counter() - started), len(files) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    for key in ("RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        os.environ.pop(key, None)

    with tempfile.TemporaryDirectory(prefix="runner-overhead-") as tmp:
        root = Path(tmp)
        data = root / "refs"
        make_references(data, args.samples, args.size)
        variants = {
            "naive: batch 1, rewrite whole JSON + fsync per sample": lambda out: naive(data, out, args.size),
            "ours: batch 1, atomic PNG + JSONL append, fsync": lambda out: ours(data, out, args.size, 1),
            "ours: batch 16, atomic PNG + JSONL append, fsync": lambda out: ours(data, out, args.size, 16),
            "ours: batch 16, no fsync (durable=False)": lambda out: ours(data, out, args.size, 16, durable=False),
        }
        rates: dict[str, list[float]] = {name: [] for name in variants}
        cpu_rates: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for number, (name, run) in enumerate(variants.items()):  # interleaved: same machine load
                wall, cpu = run(root / f"out-{repeat}-{number}")
                rates[name].append(wall)
                cpu_rates[name].append(cpu)

        one_cycle: list[float] = []
        by_cycle: list[list[float]] = [[], [], []]
        for repeat in range(args.repeats):  # interleaved: same machine load
            one_cycle += own_times(data, root / f"one-{repeat}", args.size, 1)
            for k, value in enumerate(own_times(data, root / f"three-{repeat}", args.size, 3)):
                by_cycle[k].append(value)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"runner overhead, mock adapter, {args.samples} samples at {args.size} px, median of {args.repeats} "
          f"repeats; {os.cpu_count()} CPUs, load average {load:.1f} at the end")
    print("  samples/s of wall time (higher is better); per CPU-second of this process in brackets")
    width = max(map(len, rates))
    baseline = statistics.median(rates[next(iter(rates))])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:<{width}}  {median:8.1f}  (x{median / baseline:.2f} vs naive; "
              f"min {min(values):.1f}, max {max(values):.1f})  [{statistics.median(cpu_rates[name]):.1f}/cpu-s]")
    base = statistics.median(one_cycle)
    per_cycle = [statistics.median(values) for values in by_cycle]
    mean_ratio = statistics.mean(per_cycle) / base
    print("  runner's own time per sample (adapter calls excluded), batch 16, median of repeats:")
    print(f"    one-cycle run: {base * 1e3:.2f} ms;  three-cycle run, cycle 1/2/3: "
          + " / ".join(f"{v * 1e3:.2f} ms (x{v / base:.2f})" for v in per_cycle))
    print(f"    per-cycle overhead of --cycles 3 vs one cycle: x{mean_ratio:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
