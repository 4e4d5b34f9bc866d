"""``uae-reference rl``: Unified-GRPO stages, their held-out evaluation and their settings.

    uae-reference rl train --stage all --init-from uae_reference/checkpoints/uae-tiny --output-dir runs/uae-tiny-rl
    uae-reference rl train --stage g4u --smoke --init-from DIR --output-dir /tmp/g4u
    uae-reference rl evaluate --checkpoint pre-rl=DIR --checkpoint g4u=DIR --checkpoint u4g=DIR --out runs/rl-eval
    uae-reference rl evidence            # the committed test-split evidence, with look-corrected CIs
    uae-reference rl help-config
    uae-reference rl train --preset paper --dry-run          # per-GPU memory on 8 x 80 GB, nothing loaded

Paper scale: ``accelerate launch --config_file uae_reference/configs/rl_fsdp.yaml -m uae_reference.rl.cli
train --preset paper ...`` (or ``rl_zero3.yaml``); see docs/rl-distributed.md.

Multi-process: ``accelerate launch --multi_gpu --num_processes 2 -m uae_reference.rl.cli train ...``
(on a machine without CUDA the stage joins the ranks over gloo on the CPU; ``accelerate launch
--cpu`` starts a single process unless accelerate is given an MPI hostfile).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from unified_bench.core.errors import ConfigError

rl_app = typer.Typer(
    name="rl",
    help="Unified-GRPO: G4U (GRPO on the encoder's captions) and U4G (Flow-GRPO on the decoder).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

#: Where the shipped pre-RL tiny checkpoint lives (issue 6's ``uae-tiny``).
DEFAULT_INIT = Path(__file__).resolve().parents[1] / "checkpoints" / "uae-tiny"


def _parse_sets(items: list[str] | None, classes) -> list[tuple[str, object]]:
    """['key=value', ...] -> (field, value) pairs, each a field of at least one stage config
    (values parsed as JSON when they can be)."""
    from dataclasses import fields

    known = {f.name for cls in classes for f in fields(cls)}
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in known:
            raise ConfigError(f"--set expects FIELD=VALUE with a stage config field; got {item!r} (see `uae-reference rl help-config`)")
        try:
            out.append((key, json.loads(value)))
        except json.JSONDecodeError:
            out.append((key, value))
    return out


def _overrides_for(cls, pairs: list[tuple[str, object]]) -> dict:
    """The --set pairs that ``cls`` has a field for (G4U-only fields skip U4G, and vice versa)."""
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    return {key: value for key, value in pairs if key in names}


@rl_app.command("train")
def train_cmd(
    stage: Annotated[str, typer.Option(help="g4u, u4g, or all (g4u then u4g from its result).")] = "all",
    preset: Annotated[str, typer.Option(help="tiny (CPU, Shapes) or paper.")] = "tiny",
    init_from: Annotated[Path, typer.Option(help="Checkpoint RL starts from (the pre-RL model; for --stage u4g, G4U's final/).")] = DEFAULT_INIT,
    output_dir: Annotated[Path, typer.Option(help="Run folder (g4u/ and u4g/ inside for --stage all).")] = Path("runs/uae-tiny-rl"),
    steps: Annotated[Optional[int], typer.Option(min=1, help="Override each stage's step count.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of every rollout and update.")] = None,
    num_threads: Annotated[Optional[int], typer.Option(help="torch threads per process (0: torch's default).")] = None,
    smoke: Annotated[bool, typer.Option(help="A few steps with tiny batches (CI).")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any stage field: FIELD=VALUE (applied to every stage run).")] = None,
    export: Annotated[Optional[Path], typer.Option(help="Copy each stage's final checkpoint to EXPORT/<stage>.")] = None,
    eval_limit: Annotated[int, typer.Option(help="Then evaluate the start and every stage on the first N test samples (0: skip).")] = 0,
    export_stages: Annotated[bool, typer.Option(help="--stage all: ship the result as uae-tiny and keep pre-rl/g4u in uae-tiny-stages/.")] = False,
    no_progress: Annotated[bool, typer.Option(help="No progress bar (logs only).")] = False,
    report_to: Annotated[Optional[str], typer.Option(help="Also log the curves to tensorboard, wandb or both (comma-separated); default none.")] = None,
    sharding: Annotated[Optional[str], typer.Option(help="auto (as accelerate was launched), none (DDP), fsdp or zero3.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the parameter counts and per-GPU memory of each stage; load and train nothing.")] = False,
    gpus: Annotated[int, typer.Option(min=1, help="GPUs assumed by --dry-run.")] = 8,
) -> None:
    """Run G4U, U4G or both; each writes log.csv, samples.jsonl, curves.png and final/."""
    from uae_reference.rl.config import CONFIG_CLASSES, rl_config
    from uae_reference.rl.curves import combine_logs, plot_curves
    from uae_reference.rl.trainer import train_rl_stage

    stages = ["g4u", "u4g"] if stage == "all" else [stage]
    if any(s not in CONFIG_CLASSES for s in stages):
        raise ConfigError(f"unknown stage {stage!r}; use g4u, u4g or all")
    options = dict(steps=steps, seed=seed, num_threads=num_threads, report_to=report_to, sharding=sharding)
    if dry_run:
        if preset != "paper":
            raise ConfigError("--dry-run sizes the paper preset; use --preset paper")
        sets = _parse_sets(set_, [CONFIG_CLASSES[s] for s in stages])
        configs = {
            name: rl_config(preset, name, **{k: v for k, v in options.items() if v is not None}, **_overrides_for(CONFIG_CLASSES[name], sets))
            for name in stages
        }
        print_rl_dry_run(configs, gpus)
        return
    if export_stages and stage != "all":  # checked before any training, not after it
        raise ConfigError("--export-stages needs --stage all (pre-rl, g4u and u4g)")
    if not (Path(init_from) / "uae_config.json").is_file():
        raise ConfigError(
            f"no UAE checkpoint at {init_from}; train one with `uae-reference train --preset tiny --stage all` "
            "or pass --init-from DIR"
        )
    from uae_reference.rl.trainer import process_state

    state = process_state()
    sets = _parse_sets(set_, [CONFIG_CLASSES[s] for s in stages])
    say = console.print if state.is_main_process else (lambda *a, **k: None)
    previous = str(init_from)
    started = time.time()
    logs = []
    for name in stages:
        folder = output_dir / name if stage == "all" else output_dir
        overrides = {**{k: v for k, v in options.items() if v is not None}, **_overrides_for(CONFIG_CLASSES[name], sets)}
        config = rl_config(preset, name, smoke=smoke, output_dir=str(folder), init_from=previous, **overrides)
        result = train_rl_stage(config, show_progress=not no_progress)
        previous = str(result.final_dir)
        logs.append((name, result.log_path))
        say(
            f"[bold]{name}[/]: {result.steps} steps in {result.seconds / 60:.1f} min, reward "
            f"{result.first_reward:.4f} -> {result.last_reward:.4f}; checkpoint {result.final_dir}"
        )
        if export is not None:
            _export(result.final_dir, export / name)
    say(f"total {(time.time() - started) / 60:.1f} min")
    if len(logs) > 1 and state.is_main_process:
        combine_logs(logs, output_dir / "curves.csv")
        plot_curves(logs, output_dir / "curves.png")
        say(f"curves: {output_dir / 'curves.csv'}, {output_dir / 'curves.png'}")
    if eval_limit and state.is_main_process:
        from uae_reference.rl.evaluate import evaluate_stages

        checkpoints = [("pre-rl" if stages[0] == "g4u" else "start", Path(init_from))]
        checkpoints += [(name, output_dir / name / "final" if stage == "all" else output_dir / "final") for name in stages]
        # the last stage's run carries the combined curve of every stage
        curves = {name: output_dir / "curves.csv" if (len(logs) > 1 and name == logs[-1][0]) else log_path for name, log_path in logs}
        report = evaluate_stages(checkpoints, output_dir / "eval", limit=eval_limit, progress=not no_progress, curves=curves)
        say(report.markdown())
    # after the evaluation: --init-from may be the bundled uae-tiny that the export replaces
    if export_stages and state.is_main_process:
        from uae_reference.rl.checkpoints import export_stages as ship

        targets = ship(Path(init_from), output_dir / "g4u" / "final", output_dir / "u4g" / "final")
        say("bundled stages: " + ", ".join(f"{k} -> {v}" for k, v in targets.items()))


def print_rl_dry_run(configs: dict, gpus: int) -> None:
    """The paper preset's RL stages on the meta device: parameters and per-GPU memory per plan."""
    from uae_reference.rl.memory import GPU_BYTES, HEADROOM, gib, rl_dry_run

    report = rl_dry_run(configs, gpus=gpus)
    c = report.counts
    console.print(
        f"paper preset on the meta device: {c.total:,} parameters (encoder {c.encoder:,}, decoder {c.decoder:,}, "
        f"VAE {c.vae:,}, projector {c.projector:,}); LoRA " + ", ".join(f"{s} {n:,}" for s, n in c.lora.items())
    )
    for plan in report.plans:
        label = {"fsdp": "FSDP2 full shard (ZeRO-3 alike)", "zero3": "DeepSpeed ZeRO-3", "none": "DDP, whole replicas"}[plan.sharding]
        table = Table(title=f"{plan.stage}: per-GPU memory, {plan.gpus} x 80 GB, {label}, bf16", title_justify="left")
        table.add_column("phase")
        table.add_column("term")
        table.add_column("GiB", justify="right")
        for phase, terms in (("held", plan.held), ("rollout", plan.rollout), ("update", plan.update)):
            for term, value in terms.items():
                table.add_row(phase, term, gib(value))
        table.add_row("", "peak: rollout / update", f"{gib(plan.rollout_peak)} / {gib(plan.update_peak)}")
        table.add_row("", "CUDA context + 10% fragmentation", gib(plan.overhead))
        verdict = "fits" if plan.fits else "does NOT fit"
        table.add_row("", f"[bold]total per GPU ({verdict} 80 GiB with {HEADROOM:.0%} headroom)[/]", f"[bold]{gib(plan.total)}[/]")
        console.print(table)
        console.print(f"  parameters {plan.params:,}, trainable {plan.trainable:,}; free {gib(GPU_BYTES - plan.total)} GiB")
        for line in plan.assumptions:
            console.print(f"  - {line}")


def _export(src: Path, dst: Path) -> None:
    from uae_reference.rl.trainer import process_state

    if process_state().is_main_process:
        from uae_reference.model import export_checkpoint

        export_checkpoint(src, dst)
        console.print(f"exported {src} -> {dst} (weights stored as float16)")


@rl_app.command("evaluate")
def evaluate_cmd(
    checkpoint: Annotated[list[str], typer.Option(help="NAME=DIR, in stage order (repeatable), e.g. pre-rl=DIR g4u=DIR u4g=DIR.")],
    out: Annotated[Path, typer.Option(help="Folder of the run directories and the report.")],
    limit: Annotated[Optional[int], typer.Option(min=1, help="First N samples of the split (default: all 1000).")] = None,
    split: Annotated[str, typer.Option(help="Shapes split (test: the held-out one).")] = "test",
    batch_size: Annotated[int, typer.Option(min=1)] = 50,
    seed: Annotated[int, typer.Option(help="Global seed of the runs.")] = 0,
    curve: Annotated[Optional[list[str]], typer.Option(help="NAME=CSV: attach this training curve to NAME's run (run.training).")] = None,
    num_threads: Annotated[int, typer.Option(help="torch threads (0: torch's default).")] = 1,
    reconstruction: Annotated[str, typer.Option(help="decoder (the checkpoint's) or renderer (Shapes' exact renderer: an ideal decoder).")] = "decoder",
    note: Annotated[Optional[list[str]], typer.Option(help="NAME=TEXT: what the committed evidence says of NAME's stage (run.training.note, shown on the leaderboard).")] = None,
    trip: Annotated[str, typer.Option(help="image (image -> caption -> image) or text (scene caption -> image -> caption).")] = "image",
    cycles: Annotated[int, typer.Option(min=1, help="Chain the round trip this many times; an existing run folder is extended.")] = 1,
    no_progress: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Round-trip each checkpoint on Shapes (shapes-attr, effnet, ssim; on the text trip shapes-attr of the final caption and of the drawing, effnet of the drawing) and report paired improvements with CIs, per cycle and of the drop over cycles with --cycles."""
    from uae_reference.rl.evaluate import evaluate_stages

    pairs = []
    for item in checkpoint:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--checkpoint expects NAME=DIR, got {item!r}")
        pairs.append((name, Path(path)))
    curves = {}
    for item in curve or []:
        name, sep, csv_path = item.partition("=")
        if not sep or not csv_path:
            raise ConfigError(f"--curve expects NAME=CSV, got {item!r}")
        if name not in dict(pairs):
            raise ConfigError(f"--curve names {name!r}, which is not a --checkpoint")
        curves[name] = Path(csv_path)
    notes = {}
    for item in note or []:
        name, sep, text = item.partition("=")
        if not sep or not text.strip():
            raise ConfigError(f"--note expects NAME=TEXT, got {item!r}")
        if name not in dict(pairs):
            raise ConfigError(f"--note names {name!r}, which is not a --checkpoint")
        notes[name] = text.strip()
    report = evaluate_stages(
        pairs, out, limit=limit, split=split, seed=seed, batch_size=batch_size, progress=not no_progress,
        num_threads=num_threads, reconstruction=reconstruction, curves=curves, trip=trip, cycles=cycles,
        notes=notes,
    )
    console.print(report.markdown())
    console.print(f"report: {out / 'rl_evaluation.json'}")


@rl_app.command("evidence")
def evidence_cmd(
    folder: Annotated[Optional[Path], typer.Option("--dir", help="Evidence folder (default: docs/evidence/unified-grpo).")] = None,
    derive_from: Annotated[Optional[Path], typer.Option(help="First write seed-<SEED>/ from this stage-run folder (its <stage>/results.json), e.g. leaderboard/entries/shapes/uae-tiny-rl.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="The training seed of --derive-from's runs.")] = None,
    stages: Annotated[Optional[str], typer.Option(help="Comma-separated stages that seed has (default all: pre-rl,g4u,u4g); a U4G seed started from another seed's G4U: g4u,u4g.")] = None,
    note: Annotated[Optional[str], typer.Option(help="Where the seed's starting checkpoint came from (kept in its manifest, printed with the summary).")] = None,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 10_000,
    write_doc: Annotated[Optional[Path], typer.Option(help="Also rewrite the rl-evidence block of this Markdown file (docs/unified-grpo.md).")] = None,
) -> None:
    """Per stage and seed, the paired test-split change in Shapes F1 and effnet with 95% and look-corrected CIs; across seeds, mean and spread. Reads the committed evidence files alone."""
    from uae_reference.rl.doc_blocks import write_block
    from uae_reference.rl.evidence import EVIDENCE_DIR, STAGES, derive_seed, evidence_markdown, summarise

    folder = folder or EVIDENCE_DIR
    if derive_from is not None:
        if seed is None:
            raise ConfigError("--derive-from needs --seed: the training seed of those runs")
        chosen = tuple(s.strip() for s in stages.split(",") if s.strip()) if stages else STAGES
        console.print(f"derived {derive_seed(derive_from, folder, seed, stages=chosen, note=note)}")
    text = evidence_markdown(summarise(folder, resamples=resamples))
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    if write_doc is not None:
        write_block(write_doc, "rl-evidence", text)
        console.print(f"rewrote the rl-evidence block of {write_doc}")


@rl_app.command("help-config")
def help_config(
    markdown: Annotated[bool, typer.Option(help="Print the presets' values as the Markdown table docs/unified-grpo.md quotes.")] = False,
    write_doc: Annotated[Optional[Path], typer.Option(help="Rewrite the rl-presets block of this Markdown file (docs/unified-grpo.md).")] = None,
) -> None:
    """Every field of the G4U and U4G configs, with the tiny and paper values and the field's documentation."""
    from dataclasses import fields

    from uae_reference.config import field_docs
    from uae_reference.rl.config import CONFIG_CLASSES, PAPER_RL, TINY_RL, RLConfig, preset_table_markdown

    if markdown or write_doc is not None:
        text = preset_table_markdown()
        console.print(text, markup=False, highlight=False, soft_wrap=True)
        if write_doc is not None:
            from uae_reference.rl.doc_blocks import write_block

            write_block(write_doc, "rl-presets", text)
            console.print(f"rewrote the rl-presets block of {write_doc}")
        return

    for name, cls in CONFIG_CLASSES.items():
        docs = {**field_docs(RLConfig), **field_docs(cls)}
        table = Table(title=f"{name} ({cls.__name__}); --set FIELD=VALUE")
        for column in ("field", "tiny", "paper", "meaning and source"):
            table.add_column(column)
        for f in fields(cls):
            table.add_row(f.name, repr(getattr(TINY_RL[name], f.name)), repr(getattr(PAPER_RL[name], f.name)), docs.get(f.name, ""))
        console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``python -m uae_reference.rl.cli`` (and ``accelerate launch -m``)."""
    from unified_bench.cli.entrypoint import run_app

    run_app(rl_app, argv)


if __name__ == "__main__":
    main()
