"""``uae-reference``: train and check the reference UAE model (a thin layer over library calls).

    uae-reference train --preset tiny --stage all --export uae_reference/checkpoints/uae-tiny
    uae-reference train --preset tiny --stage decoder --init-from runs/uae-tiny/sft/final
    uae-reference train --preset paper --dry-run
    uae-reference evaluate --checkpoint uae_reference/checkpoints/uae-tiny

Multi-process: ``accelerate launch --num_processes 2 --cpu -m uae_reference.cli train ...``
(or a DeepSpeed/FSDP yaml from ``uae_reference/configs/`` on GPUs).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from unified_bench.core.errors import ConfigError, UnifiedBenchError

app = typer.Typer(
    name="uae-reference",
    help="Reference UAE model: Qwen2.5-VL encoder -> projector -> SD3 MMDiT decoder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

#: The tiny recipe's stage order (see uae_reference.config for why SFT comes first).
TINY_RECIPE: tuple[str, ...] = ("sft", "vae", "decoder", "coldstart")


def _parse_sets(items: list[str] | None) -> dict:
    """['key=value', ...] -> typed overrides of TrainConfig fields (value parsed as JSON when it can be)."""
    from dataclasses import fields

    from uae_reference.config import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ConfigError(f"--set expects FIELD=VALUE with a TrainConfig field; got {item!r} (see --help-config)")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command("train")
def train_cmd(
    preset: Annotated[str, typer.Option(help="tiny (CPU, Shapes) or paper (Qwen2.5-VL-3B + SD3.5-large).")] = "tiny",
    stage: Annotated[str, typer.Option(help="sft, vae, decoder, coldstart, or all (the tiny recipe: sft -> vae -> decoder -> coldstart).")] = "all",
    output_dir: Annotated[Path, typer.Option(help="Run folder (stage folders inside for --stage all).")] = Path("runs/uae-tiny"),
    init_from: Annotated[Optional[Path], typer.Option(help="Checkpoint to start from (default: fresh preset weights).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Override the stage's step count.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Per-process batch size.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the initial weights and of every random draw.")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Held-out evaluation every N steps (0: never).")] = None,
    num_threads: Annotated[Optional[int], typer.Option(help="torch threads per process (0: torch's default).")] = None,
    smoke: Annotated[bool, typer.Option(help="A few steps on a few samples (CI).")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any TrainConfig field: FIELD=VALUE.")] = None,
    export: Annotated[Optional[Path], typer.Option(help="Copy the final checkpoint here (weights, configs, tokenizer).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print parameter counts and the memory plan; train nothing.")] = False,
    gpus: Annotated[int, typer.Option(help="Data-parallel GPUs assumed by --dry-run's memory plan.")] = 8,
    no_progress: Annotated[bool, typer.Option(help="No progress bar (logs only).")] = False,
    concurrent: Annotated[bool, typer.Option(help="--stage all: train sft and vae side by side, one core each (they share nothing).")] = True,
) -> None:
    """Train one stage (or the whole tiny recipe); resumes from OUTPUT_DIR/state when present."""
    if dry_run:
        if preset != "paper":
            raise ConfigError("--dry-run sizes the paper preset; use --preset paper")
        print_dry_run(gpus)
        return
    from uae_reference.config import STAGES, stage_config
    from uae_reference.trainer import train_stage

    stages = list(TINY_RECIPE) if stage == "all" else [stage]
    if any(s not in STAGES for s in stages):
        raise ConfigError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)} or all")
    overrides = dict(
        steps=steps, batch_size=batch_size, learning_rate=learning_rate, seed=seed, eval_every=eval_every,
        num_threads=num_threads, **_parse_sets(set_),
    )
    previous = str(init_from) if init_from else ""
    started = time.time()
    results = []
    # The tiny recipe's sft and vae stages train disjoint parts (encoder, VAE) from the same
    # fresh weights with their own seeded draws, so they can run side by side on one core each
    # and be joined afterwards: the same result as running them one after the other.
    side_vae = None
    if stage == "all" and concurrent and "vae" in stages and not init_from and _world_size() == 1:
        flags = {"--steps": steps, "--batch-size": batch_size, "--learning-rate": learning_rate, "--seed": seed, "--eval-every": eval_every}
        side_vae = _start_side_stage("vae", output_dir / "vae", preset=preset, smoke=smoke, sets=set_, flags=flags)
        stages.remove("vae")
        overrides["num_threads"] = overrides["num_threads"] or 1
    try:
        for name in stages:
            folder = output_dir / name if stage == "all" else output_dir
            config = stage_config(preset, name, smoke=smoke, output_dir=str(folder), init_from=previous, **overrides)
            if side_vae is not None and name != "sft":
                if side_vae.wait() != 0:
                    raise UnifiedBenchError(f"the vae stage failed (exit {side_vae.returncode}); its log: {output_dir / 'vae' / 'stage.log'}")
                console.print(f"[bold]vae[/]: done in a side process; log {output_dir / 'vae' / 'log.csv'}")
                config = config.replace(vae_from=str(output_dir / "vae" / "final"), num_threads=num_threads or 0)
                side_vae = None
            result = train_stage(config, show_progress=not no_progress)
            results.append(result)
            previous = str(result.final_dir)
            console.print(
                f"[bold]{name}[/]: {result.steps} steps in {result.seconds / 60:.1f} min, "
                f"loss {result.first_loss:.4f} -> {result.last_loss:.4f}; checkpoint {result.final_dir}"
            )
    finally:
        if side_vae is not None and side_vae.poll() is None:  # the main stage failed: stop the side one
            side_vae.terminate()
            side_vae.wait()
    console.print(f"total {(time.time() - started) / 60:.1f} min")
    if export is not None and results:
        from accelerate import PartialState

        if PartialState().is_main_process:
            from uae_reference.model import export_checkpoint

            export_checkpoint(results[-1].final_dir, export)
            console.print(f"exported {results[-1].final_dir} -> {export} (weights stored as float16)")


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _start_side_stage(stage: str, folder: Path, *, preset: str, smoke: bool, sets: list[str] | None, flags: dict):
    """Run one stage in a child process with one torch thread; its output goes to FOLDER/stage.log."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "uae_reference.cli", "train", "--preset", preset, "--stage", stage,
               "--output-dir", str(folder), "--num-threads", "1", "--no-progress"]
    command += ["--smoke"] if smoke else []
    for flag, value in flags.items():
        command += [flag, str(value)] if value is not None else []
    for item in sets or []:
        command += ["--set", item]
    with open(folder / "stage.log", "w") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def print_dry_run(gpus: int) -> None:
    from uae_reference.accounting import GB, dry_run
    from uae_reference.presets import PAPER_DECODER_ID, PAPER_ENCODER_ID

    report = dry_run(gpus)
    table = Table(title=f"paper preset on the meta device ({PAPER_ENCODER_ID} + {PAPER_DECODER_ID})")
    for col in ("component", "parameters", "published", "deviation"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for c in report.components:
        table.add_row(
            c.name,
            f"{c.params:,}",
            f"{c.published / 1e9:.2f}B" if c.published else "",
            f"{c.deviation * 100:+.2f}%" if c.deviation is not None else "",
        )
    console.print(table)
    console.print(
        f"LoRA r=32, alpha=64: encoder LLM all-linear {report.lora['encoder']:,} trainable; "
        f"decoder attention projections {report.lora['decoder']:,} trainable"
    )
    for plan in report.plans:
        t = Table(title=f"stage {plan.stage}: per-GPU memory, {plan.gpus} GPUs, DeepSpeed ZeRO-2, bf16")
        t.add_column("term")
        t.add_column("GiB", justify="right")
        for term, value in plan.memory_terms.items():
            t.add_row(term, f"{value / GB:.1f}")
        t.add_row("[bold]total[/]", f"[bold]{plan.total_bytes / GB:.1f}[/]")
        console.print(t)
        trainable = ", ".join(f"{k} {v:,}" for k, v in plan.trainable.items())
        fits = "fits" if plan.total_bytes < 80 * GB else "does NOT fit"
        console.print(f"  trainable: {trainable} (total {plan.trainable_total:,}); {fits} an 80 GB GPU")


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder (e.g. uae_reference/checkpoints/uae-tiny).")],
    n: Annotated[int, typer.Option(min=1, help="Test-split samples.")] = 1000,
    split: Annotated[str, typer.Option(help="Shapes split.")] = "test",
    what: Annotated[str, typer.Option(help="decoder, encoder, both, or probe (what the vision tower sees: probes trained on 3000 train scenes).")] = "both",
    out: Annotated[Optional[Path], typer.Option(help="Write the figures as JSON here.")] = None,
    guidance_scale: Annotated[Optional[float], typer.Option(help="Override the checkpoint's guidance scale.")] = None,
    num_steps: Annotated[Optional[int], typer.Option(help="Override the checkpoint's denoising steps.")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Override the caption temperature (0: greedy).")] = None,
) -> None:
    """Decoder F1 from ground-truth long captions and encoder caption precision on Shapes."""
    from uae_reference.evaluate import decoder_quality, encoder_quality, test_samples
    from uae_reference.model import UAEModel

    if what not in ("decoder", "encoder", "both", "probe"):
        raise ConfigError("--what is decoder, encoder, both or probe")
    model = UAEModel.from_pretrained(checkpoint)
    samples = test_samples(n, split=split)
    report: dict = {"checkpoint": str(checkpoint), "split": split, "n": n}
    if what == "probe":
        from uae_reference.evaluate import vision_probe

        report["vision_probe"] = vision_probe(model, test_samples(3000, split="train"), samples)
        for attribute, acc in report["vision_probe"].items():
            console.print(f"vision tower -> {attribute}: held-out probe accuracy {acc['mean']:.3f} (majority class {acc['chance']:.3f})")
    if what in ("decoder", "both"):
        started = time.time()
        q = decoder_quality(model, samples, guidance_scale=guidance_scale, num_steps=num_steps)
        report["decoder"] = q.to_dict()
        console.print(f"decoder (ground-truth long captions -> image -> oracle): F1 {q.f1}  ({time.time() - started:.0f}s)")
        for name, est in q.attribute_f1.items():
            console.print(f"  {name:9s} F1 {est}")
    if what in ("encoder", "both"):
        started = time.time()
        e = encoder_quality(model, samples, temperature=temperature)
        report["encoder"] = e.to_dict()
        console.print(f"encoder (caption -> parser): attribute precision {e.precision}  ({time.time() - started:.0f}s)")
        for name, est in e.attribute_precision.items():
            console.print(f"  {name:9s} precision {est}")
        console.print(f"  attributes stated per object {e.attributes_per_object}; long captions {e.long_fraction}")
        for example in e.examples[:3]:
            console.print(f"  [dim]{example}[/]")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")


@app.command("help-config")
def help_config() -> None:
    """Every TrainConfig field (what --set accepts) with its documentation."""
    from dataclasses import fields

    from uae_reference.config import TrainConfig, field_docs

    docs = field_docs()
    table = Table(title="TrainConfig fields (--set FIELD=VALUE)")
    table.add_column("field")
    table.add_column("default")
    table.add_column("meaning")
    for f in fields(TrainConfig):
        default = f.default if f.default is not f.default_factory else ""
        table.add_row(f.name, repr(default), docs.get(f.name, ""))
    console.print(table)


from uae_reference.rl.cli import rl_app  # noqa: E402  (Unified-GRPO: `uae-reference rl ...`)

app.add_typer(rl_app, name="rl")


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors and expected failures print one line and exit 2."""
    from unified_bench.cli.entrypoint import run_app

    run_app(app, argv, expected=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
