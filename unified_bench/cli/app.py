"""The ``unified-bench`` app: ``score``, ``metrics``, ``weights``, ``leaderboard``,
``sanity``, ``demo`` here, the round-trip commands from :mod:`unified_bench.cli.run`.

Exit codes: 0 everything scored; 1 the run finished but some samples or metrics failed
(see results.json ``errors``); 2 a usage, configuration or input error (message printed,
no traceback).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from unified_bench.cli import boards, run, shapes
from unified_bench.core.errors import ConfigError
from unified_bench.cli.common import (
    DEVICE_PREPROCESSING_HELP,
    FUSE_HELP,
    DevicePreprocessing,
    console,
    err_console,
    check_name,
    finish,
    markdown_table,
    parse_key_values,
    report_outcome,
    scoring_config,
)

app = typer.Typer(
    name="unified-bench",
    help="Round-trip benchmark for unified multimodal models: caption, regenerate, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
weights_app = typer.Typer(help="Manage metric weights (pre-download for air-gapped clusters).", no_args_is_help=True)
app.add_typer(weights_app, name="weights")
app.add_typer(shapes.app, name="shapes")
app.add_typer(boards.dataset_app, name="dataset")
app.command("table")(boards.table_cmd)

@app.command("score")
def score_cmd(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A run directory of `eval` to rescore in place (every trip and cycle), instead of --images/--refs/--out.", show_default=False)] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder of reconstructions.")] = None,
    refs: Annotated[Optional[Path], typer.Option("--refs", help="Folder of reference images.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory for results.json and scores.csv.")] = None,
    metrics: Annotated[Optional[str], typer.Option("--metrics", help="Comma-separated metrics; 'paper' and 'extended' expand (default: paper; for a RUN_DIR, the run's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per forward (default: 8 on CPU, 64 on CUDA).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="float32, float16 or bfloat16 (default: fp32 on CPU, half on CUDA).")] = None,
    checkpoint: Annotated[Optional[list[str]], typer.Option("--checkpoint", help="Override a metric's weights: METRIC=PATH_OR_HUB_ID (repeatable).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Reference-embedding cache (default ~/.cache/unified_bench).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the reference-embedding cache.")] = False,
    fuse: Annotated[Optional[bool], typer.Option("--fuse/--no-fuse", help=FUSE_HELP)] = None,
    device_preprocessing: Annotated[Optional[DevicePreprocessing], typer.Option("--device-preprocessing", help=DEVICE_PREPROCESSING_HELP)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Display label stored in the run record and shown on the leaderboard (default: the model's name).")] = None,
) -> None:
    """Score reconstructions against references, matched by file stem; or rescore a run directory."""
    from unified_bench.metrics import parse_metric_list
    from unified_bench.scoring import score_folders

    if run_dir is not None:
        if images is not None or refs is not None or out is not None:
            raise ConfigError("give either a RUN_DIR or --images, --refs and --out, not both")
    elif images is None or refs is None or out is None:
        import click

        missing = ", ".join(f"'{name}'" for name, value in (("--images", images), ("--refs", refs), ("--out", out)) if value is None)
        raise click.UsageError(f"Missing option {missing}: give --images, --refs and --out to score two folders, or a RUN_DIR to rescore")
    names = parse_metric_list(metrics) if metrics else ([] if run_dir is not None else parse_metric_list("paper"))
    overrides = parse_key_values(checkpoint, "--checkpoint")
    unknown = sorted(set(overrides) - set(names)) if names else []
    if unknown:
        raise ConfigError(f"--checkpoint names metrics that are not in --metrics: {', '.join(unknown)}")
    config = scoring_config(
        names,
        checkpoints=overrides,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        cache_dir=cache_dir,
        no_cache=no_cache,
        fuse=fuse,
        device_preprocessing=device_preprocessing,
    )
    if run_dir is not None:
        from unified_bench.core.provenance import command_line
        from unified_bench.runner.config import EvalConfig
        from unified_bench.runner.score import score_run

        if not (run_dir / "run.json").is_file():
            raise ConfigError(f"{run_dir}: not a run directory of `unified-bench eval` (no run.json)")
        run = EvalConfig(model="(from run)", data="(from run)", out=run_dir, metrics=names or None, scoring=config,
                         command=command_line(), name=check_name(name))
        report_outcome(score_run(run_dir, run, console=err_console))
        return
    outcome = score_folders(images, refs, out, config, console=err_console, name=check_name(name))
    report_outcome(outcome)


@app.command("metrics")
def metrics_cmd() -> None:
    """List the registered metrics with their default checkpoints."""
    from unified_bench.core.errors import UnifiedBenchError
    from unified_bench.metrics import PAPER_METRICS, list_specs, metric_reads

    def reads(name: str) -> str:
        try:
            return ", ".join(metric_reads(name))
        except UnifiedBenchError:  # a plugin that cannot be imported: listed, flagged when used
            return "?"

    table = Table(title="metrics")
    table.add_column("name")
    table.add_column("reads")
    table.add_column("default checkpoint")
    table.add_column("offline")
    table.add_column("description")
    for spec in list_specs():
        paper = " (paper)" if spec.name in PAPER_METRICS else ""
        table.add_row(spec.name + paper, reads(spec.name), spec.default_checkpoint or "-", "yes" if spec.offline else "no", spec.description)
    console.print(table)


@weights_app.command("fetch")
def weights_fetch_cmd(
    metrics: Annotated[str, typer.Option("--metrics", help="Comma-separated metrics; 'paper' and 'extended' expand.")] = "paper",
    checkpoint: Annotated[Optional[list[str]], typer.Option("--checkpoint", help="Fetch another checkpoint: METRIC=HUB_ID (repeatable).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Hub cache to fill (default: $HF_HUB_CACHE, else $HF_HOME/hub).")] = None,
) -> None:
    """Pre-download metric weights into the Hugging Face cache (needs network)."""
    from unified_bench.metrics import parse_metric_list
    from unified_bench.metrics.weights import fetch_weights

    results = fetch_weights(parse_metric_list(metrics), parse_key_values(checkpoint, "--checkpoint"), cache_dir)
    table = Table(title="weights")
    for column in ("metric", "checkpoint", "status", "revision"):
        table.add_column(column)
    for item in results:
        status = "[red]failed[/]" if item.error else item.note
        table.add_row(item.metric, item.checkpoint or "-", status, item.revision or "-")
    console.print(table)
    for item in results:
        if item.error:
            err_console.print(f"{item.metric}: {item.error}", style="red", highlight=False, markup=False)
    if cache_dir is not None:
        console.print(f"set HF_HUB_CACHE={cache_dir} (and HF_HUB_OFFLINE=1 on machines without network) when scoring")
    if any(item.error for item in results):
        raise typer.Exit(1)



run.register(app)  # eval, merge, serve, models


@app.command("leaderboard")
def leaderboard_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for the static site (replaced if it is a previous site).")],
    runs: Annotated[Optional[list[Path]], typer.Option("--runs", help="A run directory, or a folder of run directories (repeatable).")] = None,
    entries: Annotated[Optional[list[Path]], typer.Option("--entries", help="Folder of stored entries, e.g. leaderboard/entries (repeatable).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any entry was rejected (the site is still built).")] = False,
) -> None:
    """Build the static leaderboard site from run directories and stored entries."""
    from unified_bench.leaderboard import build_site

    if not runs and not entries:
        raise ConfigError("give at least one --runs DIR or --entries DIR")
    result = build_site(runs or [], entries or [], out, log=lambda msg: err_console.print(msg, highlight=False))
    for rejection in result.rejections:
        # entry text is untrusted: printed with markup off so it cannot restyle the terminal output
        err_console.print(f"rejected {rejection.source}: {rejection.message}", style="red", highlight=False, markup=False)
    for notice in result.notices:
        err_console.print(notice, style="yellow", highlight=False, markup=False)
    console.print(
        f"built {result.out / 'index.html'}: {result.runs} run(s), {result.reported} reported, "
        f"{len(result.rejections)} rejected, {result.files} files",
        highlight=False,
        markup=False,
    )
    if strict and result.rejections:
        raise typer.Exit(1)


class CompareFormat(str, Enum):
    md = "md"
    csv = "csv"
    json = "json"


@app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories or results.json files; each after the first is compared to the first.")],
    format: Annotated[CompareFormat, typer.Option("--format", help="md, csv or json.")] = CompareFormat.md,
    power: Annotated[float, typer.Option("--power", help="Power for the MDE and the required n (paired t-test).")] = 0.8,
    alpha: Annotated[float, typer.Option("--alpha", help="Two-sided level for the MDE and the required n.")] = 0.05,
    cycle: Annotated[int, typer.Option("--cycle", min=1, help="Compare this cycle of each run (runs made with --cycles).")] = 1,
    versus: Annotated[str, typer.Option("--versus", help="With --cycle: each cycle's scores against the 'original' or the 'previous' cycle.")] = "original",
    drop: Annotated[bool, typer.Option("--drop", help="Compare each sample's drop over the cycles (cycle 1 minus the last cycle) instead of a cycle's scores.")] = False,
) -> None:
    """Paired differences B - A per metric and composite score over the samples both runs share
    (same id and reference image), with 95% bootstrap CIs, permutation p-values, and the minimum
    detectable difference (MDE) and required number of samples at --power and --alpha.

    Runs made with --cycles compare cycle 1 by default; --cycle K (and --versus previous) picks
    another cycle's scores, --drop the per-sample drop from cycle 1 to the last cycle (a lower
    drop is a slower drift)."""
    import json

    from unified_bench.core.stats import check_power_settings
    from unified_bench.leaderboard.comparison import compare_runs, comparison_frame, report_label
    from unified_bench.results import read_report

    if len(runs) < 2:
        raise ConfigError("compare needs at least two runs: unified-bench compare RUN_A RUN_B [RUN_C ...]")
    try:
        check_power_settings(power, alpha)
    except ValueError as err:
        raise ConfigError(f"--power/--alpha: {err}") from None
    if versus not in ("original", "previous"):
        raise ConfigError(f"--versus must be 'original' or 'previous', got {versus!r}")
    reports = [read_report(path) for path in runs]
    try:
        if drop:
            reports = [r.drop() for r in reports]
        elif cycle != 1 or versus != "original":
            reports = [r.at_cycle(cycle, versus) for r in reports]
    except ValueError as err:
        raise ConfigError(f"compare: {err}") from None
    labels = [report_label(r) for r in reports]
    if len(set(labels)) < len(labels):  # the same model twice: tell them apart by path
        labels = [f"{label} ({path})" for label, path in zip(labels, runs)]
    comparisons = compare_runs(reports, labels, power=power, alpha=alpha)
    if format is CompareFormat.json:
        console.print_json(json.dumps([c.to_dict() for c in comparisons], allow_nan=False))
        return
    for comparison in comparisons:
        for warning in comparison.warnings:
            err_console.print(f"warning ({comparison.b} vs {comparison.a}): {warning}", style="yellow", highlight=False, markup=False)
        for note in comparison.notes:
            err_console.print(f"note ({comparison.b} vs {comparison.a}): {note}", highlight=False, markup=False)
    table = comparison_frame(comparisons)
    if format is CompareFormat.csv:
        text = table.to_csv(index=False)
    else:
        text = markdown_table(table)
    console.print(text.rstrip("\n"), highlight=False, markup=False)


@app.command("sanity")
def sanity_cmd(
    metrics: Annotated[str, typer.Option("--metrics", help="Comma-separated metrics to check.")] = "effnet,ssim,psnr",
    out: Annotated[Path, typer.Option("--out", help="Folder for sanity.json, sanity.md and the run directory OUT/run (per-pair scores in OUT/run/results.json).")] = Path("runs/sanity"),
    photos: Annotated[Optional[str], typer.Option("--photos", help="Comma-separated photo ids (default: the whole offline set).")] = None,
    max_side: Annotated[int, typer.Option("--max-side", min=16, help="Score photos resized to this long side (px).")] = 512,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Images per forward (default: 8 on CPU, 64 on CUDA).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")] = "cpu",
    checkpoint: Annotated[Optional[list[str]], typer.Option("--checkpoint", help="Override a metric's weights: METRIC=PATH_OR_HUB_ID (repeatable).")] = None,
    keep_images: Annotated[bool, typer.Option("--keep-images", help="Keep the run's degraded copies and references (OUT/run/images, OUT/run/refs).")] = False,
) -> None:
    """Score graded degradations of real photos against unrelated photos; report what each metric sees.

    One round trip: the ``degrade`` test-double adapter on the ``photos-sanity`` dataset.
    """
    from unified_bench.datasets.photos import photo_set
    from unified_bench.metrics import parse_metric_list
    from unified_bench.tracks.sanity import print_report, run_sanity

    names = parse_metric_list(metrics)
    chosen = photo_set([p.strip() for p in photos.split(",") if p.strip()] if photos else None)
    report = run_sanity(
        out,
        metrics=names,
        photos=chosen,
        max_side=max_side,
        batch_size=batch_size,
        device=device,
        checkpoints=parse_key_values(checkpoint, "--checkpoint"),
        keep_images=keep_images,
        console=err_console,
    )
    print_report(report, console)
    console.print(f"wrote {out / 'sanity.json'} and {out / 'sanity.md'}")
    if report.failed_metrics or report.errors:
        raise typer.Exit(1)


@app.command("demo")
def demo_cmd(
    out: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/demo"),
    limit: Annotated[int, typer.Option("--limit", min=1, help="Samples from the Shapes test split (the first N: a fixed subset).")] = 200,
) -> None:
    """The main job on the embedded default, offline: the shipped reference model on the Shapes track.

    Runs ``unified-bench eval --model uae-tiny --data shapes --limit 200``: the tiny reference
    UAE model (trained here, shipped in the repository) captions the first 200 test scenes,
    regenerates each from its own caption, and the round trip is scored with the attribute
    oracle (``shapes-attr``) and ``effnet``, with bootstrap intervals. Re-running
    resumes the same run directory.
    """
    from unified_bench.core.provenance import command_line
    from unified_bench.runner.eval import EvalConfig, run_eval

    config = EvalConfig(
        model="uae-tiny",
        data="shapes",
        out=out,
        model_args={},
        data_args={"split": "test"},
        limit=limit,
        batch_size=25,
        resume=(out / "captions.jsonl").exists(),
        command=command_line(),
    )
    outcome = run_eval(config, console=err_console)
    finish(outcome)
