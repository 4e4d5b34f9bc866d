"""``unified-bench shapes``: reproducible commands of the Shapes track.

    render        write a split's images and captions to a folder
    export-hf     write a split as a Hugging Face dataset (save_to_disk)
    stats         attribute distributions of a split (Markdown)
    train-oracle  train the oracle from scratch (fixed seed) and write its checkpoint
    eval-oracle   per-attribute accuracy of an oracle checkpoint on held-out renders
    calibrate     the calibration table (shapes-oracle long/short, blank): one runner round trip per row
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="shapes",
    help="Shapes track: procedural scenes, captions, oracle and calibration.",
    no_args_is_help=True,
)

Split = Annotated[str, typer.Option("--split", help="train, val or test.")]
Limit = Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N samples.")]
Size = Annotated[int, typer.Option("--size", min=16, help="Image side in pixels.")]


@app.command("render")
def render_cmd(out: Annotated[Path, typer.Option("--out")], split: Split = "test", size: Size = 256, limit: Limit = None) -> None:
    """Write OUT/images/<id>.png and OUT/captions.jsonl (short, long, scene) for a split."""
    from unified_bench.tracks.shapes.splits import iter_samples

    (out / "images").mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out / "captions.jsonl", "w", encoding="utf-8") as handle:
        for sample in iter_samples(split, size, limit):
            sample.image.save(out / "images" / f"{sample.sample_id}.png")
            row = {
                "sample_id": sample.sample_id,
                "caption_short": sample.caption_short,
                "caption_long": sample.caption_long,
                "scene": sample.scene.to_dict(),
                "seed": sample.seed,
            }
            handle.write(json.dumps(row) + "\n")
            count += 1
    typer.echo(f"wrote {count} samples to {out}")


@app.command("export-hf")
def export_hf_cmd(out: Annotated[Path, typer.Option("--out")], split: Split = "test", size: Size = 256, limit: Limit = None) -> None:
    """Write a split as a Hugging Face dataset (load it with datasets.load_from_disk)."""
    from unified_bench.tracks.shapes.splits import export_hf

    dataset = export_hf(out, split, size=size, limit=limit)
    typer.echo(f"wrote {len(dataset)} rows ({', '.join(dataset.column_names)}) to {out}")


@app.command("stats")
def stats_cmd(split: Split = "test", limit: Limit = None) -> None:
    """Attribute distributions of a split, as Markdown tables."""
    from unified_bench.tracks.shapes.splits import attribute_counts

    for name, counter in attribute_counts(split, limit).items():
        total = sum(counter.values())
        typer.echo(f"\n| {name} | count | share |\n|---|---|---|")
        for value, n in sorted(counter.items(), key=lambda item: str(item[0])):
            typer.echo(f"| {value} | {n} | {n / total:.3f} |")


@app.command("train-oracle")
def train_oracle_cmd(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint path (.safetensors).")] = Path(
        "unified_bench/tracks/shapes/oracle.safetensors"
    ),
    seed: Annotated[int, typer.Option("--seed")] = 0,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
    n_train: Annotated[int | None, typer.Option("--n-train", min=100)] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads (changes the exact weights).")] = None,
) -> None:
    """Train the oracle from scratch (defaults reproduce the bundled checkpoint)."""
    from dataclasses import replace

    from unified_bench.tracks.shapes.oracle import OracleTrainConfig, train_oracle

    config = OracleTrainConfig(seed=seed)
    overrides = {k: v for k, v in {"epochs": epochs, "n_train": n_train, "threads": threads}.items() if v is not None}
    train_oracle(out, replace(config, **overrides), log=typer.echo)


@app.command("eval-oracle")
def eval_oracle_cmd(
    checkpoint: Annotated[str, typer.Option("--checkpoint")] = "bundled",
    split: Split = "test",
    n: Annotated[int, typer.Option("--n", min=1, help="Number of renders.")] = 1000,
    size: Size = 64,
    degraded: Annotated[bool, typer.Option("--degraded", help="Blur + noise + JPEG q=60 first.")] = False,
) -> None:
    """Per-attribute accuracy of the oracle on the first N renders of a held-out split."""
    from unified_bench.tracks.shapes.oracle import ShapesOracle, evaluate_oracle

    started = time.perf_counter()
    accuracy = evaluate_oracle(ShapesOracle(checkpoint), split, n, size, degraded=degraded)
    typer.echo(f"| attribute | accuracy ({split}, n={n} scenes, {size}px{', degraded' if degraded else ''}) |\n|---|---|")
    for name, value in accuracy.items():
        typer.echo(f"| {name} | {value:.4f} |")
    typer.echo(f"({time.perf_counter() - started:.1f}s)")


@app.command("calibrate")
def calibrate_cmd(
    out: Annotated[Path, typer.Option("--out")] = Path("runs/shapes-calibration"),
    split: Split = "test",
    limit: Limit = None,
    size: Size = 256,
    metrics: Annotated[str, typer.Option("--metrics", help="Comma-separated metrics.")] = "shapes-attr,effnet,ssim",
    resume: Annotated[bool, typer.Option("--resume", help="Continue (or rescore) the row run directories already in OUT.")] = False,
) -> None:
    """The calibration table: every row is a runner round trip (a run directory OUT/<row>/) scored by the scoring engine."""
    from unified_bench.tracks.shapes.calibration import calibrate, markdown_table

    started = time.perf_counter()
    rows = calibrate(out, split=split, limit=limit, size=size, metrics=[m for m in metrics.split(",") if m], resume=resume, log=typer.echo)
    table = markdown_table(rows)
    (out / "calibration.md").write_text(table + "\n", encoding="utf-8")
    typer.echo(table)
    typer.echo(f"({time.perf_counter() - started:.0f}s; table in {out / 'calibration.md'})")

