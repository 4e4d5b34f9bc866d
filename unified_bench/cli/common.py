"""What every command shares: the consoles, flag parsing, the scoring options, and how a
finished run is reported (exit 1 when a sample or metric failed)."""

from __future__ import annotations

from enum import Enum

import typer
from rich.console import Console
from rich.table import Table

from unified_bench.core.errors import ConfigError

SCORING_PANEL = "Scoring"

console = Console(soft_wrap=True)  # never break a path or message across lines
err_console = Console(stderr=True, soft_wrap=True)


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    """['clip=/path', 'dinov2=org/name'] -> dict, with a clear error for malformed items."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def print_metric_summary(results: dict) -> None:
    """A readable per-metric table of a results.json dict."""
    table = Table(title="scores", show_lines=False)
    table.add_column("metric")
    table.add_column("mean", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("valid/total", justify="right")
    for name, stats in results["statistics_by_model"].items():
        ci = results["confidence_intervals"].get(name) or {}
        table.add_row(
            name,
            f"{stats['average_similarity']:.4f}",
            f"[{ci.get('low', float('nan')):.4f}, {ci.get('high', float('nan')):.4f}]",
            f"{stats['valid_pairs']}/{stats['total_images']}",
        )
    for key, sub in sorted(results.get("sub_scores", {}).items()):
        ci = sub.get("ci95") or {}
        if sub.get("mean") is None:
            continue
        table.add_row(f"  {key}", f"{sub['mean']:.4f}", f"[{ci.get('low', 0):.4f}, {ci.get('high', 0):.4f}]", "")
    console.print(table)
    for label, key in (("unified score (paper, x100)", "unified_score"), ("extended score (x100)", "extended_score")):
        block = results.get(key)
        if block:
            ci = block["ci95"]
            console.print(f"{label}: [bold]{block['value']:.2f}[/] (95% CI {ci['low']:.2f}-{ci['high']:.2f})")


class DevicePreprocessing(str, Enum):
    """``--device-preprocessing`` (``ScoringConfig.device_preprocessing``): a choice, so that a
    mistyped value is a usage error naming the three values."""

    none = "none"
    normalize = "normalize"
    resize = "resize"


FUSE_HELP = "Run CLIP/DINO backbones as a fused oneDNN graph (default: on a CPU in float32 from 64 images)."
DEVICE_PREPROCESSING_HELP = (
    "Preprocessing steps run on the metric's device, bit-identical to the CPU's: none, normalize, "
    "or resize (resize, crop and normalise; default on CUDA; none on CPU)."
)


def device_preprocessing_value(choice: DevicePreprocessing | str | None) -> str | None:
    """The plain string ScoringConfig takes (None: the device's default)."""
    return choice.value if isinstance(choice, DevicePreprocessing) else choice


def scoring_config(
    metrics: list[str] | tuple[str, ...],
    *,
    checkpoints: dict[str, str],
    device: str,
    dtype: str | None,
    batch_size: int | None,
    cache_dir,
    no_cache: bool,
    fuse: bool | None,
    device_preprocessing: DevicePreprocessing | str | None,
):
    """The ``ScoringConfig`` of the scoring flags ``score``, ``eval`` and ``merge`` share."""
    from unified_bench.scoring import ScoringConfig

    return ScoringConfig(
        metrics=metrics,
        checkpoints=checkpoints,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        cache_dir=cache_dir,
        use_cache=not no_cache,
        fuse=fuse,
        device_preprocessing=device_preprocessing_value(device_preprocessing),
    )


def parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    width, sep, height = text.lower().partition("x")
    try:
        return (int(width), int(height or width)) if (sep or width) else None
    except ValueError:
        raise ConfigError(f"--size expects N or WxH (e.g. 1024 or 768x1024), got {text!r}") from None


def report_outcome(outcome) -> None:
    """Print the summary, unmatched files, errors; exit 1 when anything failed."""
    results = outcome.results
    if outcome.report.unmatched_images:
        err_console.print(f"[yellow]{len(outcome.report.unmatched_images)} reconstruction(s) without a reference:[/]")
        for path in outcome.report.unmatched_images[:20]:
            err_console.print(f"  {path}")
    if outcome.report.unmatched_refs:
        err_console.print(f"[yellow]{len(outcome.report.unmatched_refs)} reference(s) without a reconstruction:[/]")
        for path in outcome.report.unmatched_refs[:20]:
            err_console.print(f"  {path}")
    if results["statistics_by_model"]:
        print_metric_summary(results)
    for failure in outcome.failures:
        err_console.print(f"[red]metric {failure.metric} did not run:[/] {failure.message}")
    if outcome.report.errors:
        err_console.print(f"[red]{len(outcome.report.errors)} per-sample error(s):[/]")
        for err in outcome.report.errors[:20]:
            where = f"{err.stage}/{err.metric}" if err.metric else err.stage
            err_console.print(f"  {err.sample_id} [{where}]: {err.message}")
    console.print(f"wrote {outcome.out_dir / 'results.json'} and {outcome.out_dir / 'scores.csv'}")
    if not outcome.ok:
        raise typer.Exit(1)


def finish(outcome) -> None:
    """Print what happened; exit 1 if any sample (or metric) failed, or the run stopped
    early (its last line then says how to resume)."""
    stopped = getattr(outcome, "stopped", None)
    try:
        _report_run(outcome)
    except typer.Exit:
        if stopped is None:
            raise
    if stopped is not None:
        from rich.markup import escape

        err_console.print(f"[red]stopped:[/] {escape(stopped)}", highlight=False)
        raise typer.Exit(1)


def _report_run(outcome) -> None:
    if outcome.score is not None:  # runner errors are in results.json errors; printed there
        report_outcome(outcome.score)
        return
    console.print(f"{outcome.role}: {outcome.finished} sample(s) finished in {outcome.out_dir}")
    if outcome.role == "shard":
        console.print("when every shard is done: unified-bench merge SHARD_DIR ... --out DIR  (merges and scores)")
    if outcome.errors:
        err_console.print(f"[red]{len(outcome.errors)} sample(s) failed[/] (see {outcome.out_dir / 'errors.jsonl'}):")
        for err in outcome.errors[:20]:
            err_console.print(f"  {err.sample_id} [{err.stage}]: {err.message}")
        raise typer.Exit(1)


def markdown_table(frame) -> str:
    """A DataFrame as a Markdown table: pandas' ``to_markdown`` (needs ``tabulate``), else
    pandas' CSV writer with ``|`` separators and the header rule Markdown needs."""
    try:
        return frame.to_markdown(index=False, floatfmt=".4g")
    except ImportError:
        body = frame.to_csv(sep="|", index=False, float_format="%.4g", lineterminator="\n").rstrip("\n").splitlines()
        rule = "|".join("---" for _ in frame.columns)
        return "\n".join(f"| {line.replace('|', ' | ')} |" for line in [body[0], rule, *body[1:]])


def check_name(name: str | None) -> str | None:
    """``--name``: a non-empty, single-line label (None: the model's name is shown)."""
    if name is None:
        return None
    if not name.strip() or "\n" in name or "\r" in name:
        raise ConfigError(f"--name expects a non-empty single-line label, got {name!r}")
    return name.strip()
