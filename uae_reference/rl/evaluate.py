"""Held-out evaluation of RL stage checkpoints through the benchmark itself.

Each checkpoint is run through ``unified-bench eval`` (the runner, as a library call) on the
Shapes **test** split — captions, reconstructions, ``shapes-attr``, ``effnet`` and ``ssim`` scores in an
ordinary run directory the leaderboard can read — and consecutive stages are compared per
sample: the mean paired difference with its paired percentile-bootstrap 95% interval
(:func:`paired_bootstrap_ci`, ``scipy.stats.bootstrap`` with ``paired=True``). The runs share
sample ids, seeds and reference images, so the difference isolates what the stage changed.

Training never sees this split; hyperparameters are not chosen on it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unified_bench.core.stats import Interval

EVAL_METRICS: tuple[str, ...] = ("shapes-attr", "effnet", "ssim")  # the Shapes track's metrics
#: on the text trip (prompt -> image -> caption): the final caption against the scene, and the
#: intermediate drawing read by the oracle and embedded by effnet against the scene's render
TEXT_EVAL_METRICS: tuple[str, ...] = ("shapes-attr", "shapes-attr@image", "effnet@image")
REPORT_FILE = "rl_evaluation.json"


@dataclass
class StageEval:
    """One checkpoint's run on the test split."""

    name: str
    checkpoint: str
    run_dir: str
    means: dict[str, float]
    ci95: dict[str, list[float]]
    n: int
    #: which half of the round trip loses the objects (:func:`round_trip_breakdown`)
    breakdown: dict[str, Any] | None = None
    #: a run of several cycles: its results.json ``cycle_curves`` (per metric: mean per cycle,
    #: drop from cycle 1 to the last with its paired CI); None for one cycle
    curves: dict[str, Any] | None = None


@dataclass
class Improvement:
    """mean(after - before) over paired samples, with its 95% paired-bootstrap interval."""

    before: str
    after: str
    metric: str
    mean: float | None
    low: float | None
    high: float | None
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


@dataclass
class CycleImprovement(Improvement):
    """An :class:`Improvement` at a later cycle (``cycle``: its scores against the original) or of
    each sample's drop over the cycles (``cycle = "drop"``: cycle 1 minus the last; a negative
    change is a slower drift)."""

    cycle: int | str = 1


@dataclass
class EvaluationReport:
    stages: list[StageEval]
    improvements: list[Improvement] = field(default_factory=list)
    split: str = "test"
    limit: int | None = None
    #: ``--trip`` and ``--cycles`` of the runs; the report adds them (and the per-cycle and drop
    #: changes) only when they are not the default image trip of one cycle
    trip: str = "image"
    cycles: int = 1
    cycle_improvements: list[CycleImprovement] = field(default_factory=list)

    @property
    def default(self) -> bool:
        return self.trip == "image" and self.cycles == 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        """The report a :meth:`to_dict` was written from (its markdown, again)."""
        fields_of = lambda row: {k: v for k, v in row.items() if k != "excludes_zero"}  # noqa: E731
        return cls(
            [StageEval(**s) for s in data["stages"]],
            [Improvement(**fields_of(i)) for i in data["improvements"]],
            data.get("split", "test"),
            data.get("limit"),
            data.get("trip", "image"),
            data.get("cycles", 1),
            [CycleImprovement(**fields_of(i)) for i in data.get("cycle_improvements", [])],
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "split": self.split,
            "limit": self.limit,
            "stages": [{k: v for k, v in asdict(s).items() if k != "curves" or v is not None} for s in self.stages],
            "improvements": [{**asdict(i), "excludes_zero": i.excludes_zero} for i in self.improvements],
        }
        if not self.default:
            data["trip"], data["cycles"] = self.trip, self.cycles
            data["cycle_improvements"] = [{**asdict(i), "excludes_zero": i.excludes_zero} for i in self.cycle_improvements]
        return data

    def markdown(self) -> str:
        metrics = list(self.stages[0].means) if self.stages else []
        lines = ["| stage | " + " | ".join(f"{m} (95% CI)" for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
        for s in self.stages:
            cells = [f"{s.means[m]:.4f} [{s.ci95[m][0]:.4f}, {s.ci95[m][1]:.4f}]" for m in metrics]
            lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
        breakdowns = [(s.name, s.breakdown) for s in self.stages if s.breakdown]
        if breakdowns:
            lines += [
                "",
                "| stage | caption F1 (caption vs scene) | captions stating every attribute | render F1 on those (image vs caption) |",
                "|---|---|---|---|",
            ]
            for name, b in breakdowns:
                render = "n/a" if b["render_f1"] is None else f"{b['render_f1']:.4f}"
                lines.append(f"| {name} | {b['caption_f1']:.4f} | {b['fully_stated']} of {b['n']} | {render} |")
        lines += ["", "| change | metric | mean paired difference | 95% CI | CI excludes 0 |", "|---|---|---|---|---|"]
        for i in self.improvements:
            if i.mean is None:
                lines.append(f"| {i.before} -> {i.after} | {i.metric} | n/a | n/a | no |")
                continue
            verdict = "no" if not i.excludes_zero else ("yes, better" if i.low > 0 else "yes, worse")
            lines.append(f"| {i.before} -> {i.after} | {i.metric} | {i.mean:+.4f} | [{i.low:+.4f}, {i.high:+.4f}] | {verdict} |")
        if not self.default:
            lines = [f"{self.trip} trip, {self.cycles} cycle(s): the next tables are cycle 1, the last two every cycle", "", *lines]
            lines += self._cycle_lines()
        return "\n".join(lines) + "\n"

    def _cycle_lines(self) -> list[str]:
        curved = [s for s in self.stages if s.curves]
        if not curved:
            return []
        metrics = list(curved[0].curves)
        head = " | ".join(f"cycle {k}" for k in range(1, self.cycles + 1))
        lines = ["", f"| stage | metric | {head} | drop, cycle 1 - {self.cycles} (95% CI) |", "|---|---|" + "---|" * (self.cycles + 1)]
        for s in curved:
            for m in metrics:
                curve = s.curves.get(m) or {}
                cells = " | ".join("n/a" if v is None else f"{v:.4f}" for v in curve.get("by_cycle", []))
                ci = curve.get("drop_paired_ci95")
                drop = "n/a" if ci is None else f"{ci['mean']:+.4f} [{ci['low']:+.4f}, {ci['high']:+.4f}]"
                lines.append(f"| {s.name} | {m} | {cells} | {drop} |")
        lines += ["", "| change | at | metric | mean paired difference | 95% CI | CI excludes 0 |", "|---|---|---|---|---|---|"]
        for i in self.cycle_improvements:
            at = f"cycle {i.cycle}" if i.cycle != "drop" else "drop (lower: slower drift)"
            if i.mean is None:
                lines.append(f"| {i.before} -> {i.after} | {at} | {i.metric} | n/a | n/a | no |")
                continue
            if not i.excludes_zero:
                verdict = "no"
            else:  # a larger score is better; a larger drop is worse
                better = (i.low > 0) != (i.cycle == "drop")
                verdict = "yes, better" if better else "yes, worse"
            lines.append(f"| {i.before} -> {i.after} | {at} | {i.metric} | {i.mean:+.4f} | [{i.low:+.4f}, {i.high:+.4f}] | {verdict} |")
        return lines


def round_trip_breakdown(run_dir: str | Path, *, oracle: Any = None) -> dict[str, Any]:
    """Split a Shapes run's object F1 into its understanding and generation halves.

    - ``caption_f1``: the caption, parsed by the caption grammar, against the true scene
      (attributes a caption leaves unsaid count as wrong, as in ``shapes-attr``);
    - ``render_f1``: the reconstruction, read by the Shapes oracle, against the scene the
      *caption* describes, over the captions that state every attribute of every object they
      name (``fully_stated`` of ``n``): how faithfully the decoder draws what it was told.

    The end-to-end ``shapes-attr`` F1 is roughly their product; the larger gap says which
    model half limits the round trip (and so which RL stage has room to improve it).
    """
    import numpy as np
    from PIL import Image

    from unified_bench.tracks.shapes.captions import parse
    from unified_bench.tracks.shapes.compare import compare_scenes
    from unified_bench.tracks.shapes.oracle import ShapesOracle
    from unified_bench.tracks.shapes.scene import ATTRIBUTES, Scene
    from unified_bench.runner.store import CAPTIONS_FILE, CaptionRecord, read_jsonl

    run_dir = Path(run_dir)
    records = [CaptionRecord.from_dict(row) for row in read_jsonl(run_dir / CAPTIONS_FILE)]
    records = [r for r in records if r.meta and "scene" in r.meta]
    if not records:
        raise ValueError(f"{run_dir} holds no Shapes samples with ground-truth scenes")
    truths = [Scene.from_dict(r.meta["scene"]) for r in records]
    captions = [parse(r.caption) for r in records]
    full = [i for i, c in enumerate(captions) if c.objects and c.is_complete]
    render_f1 = None
    if full:
        oracle = oracle or ShapesOracle()
        drawn = oracle.parse([Image.open(run_dir / records[i].image).convert("RGB") for i in full])
        render_f1 = float(np.mean([compare_scenes(captions[i], d).f1 for i, d in zip(full, drawn)]))
    said = [compare_scenes(t, c) for t, c in zip(truths, captions)]
    return {
        "n": len(records),
        "caption_f1": float(np.mean([c.f1 for c in said])),
        "caption_attribute_f1": {a: float(np.mean([c.attribute_f1(a) for c in said])) for a in ATTRIBUTES},
        "fully_stated": len(full),
        "render_f1": render_f1,
    }


def per_sample_scores(run_dir: str | Path, metric: str) -> dict[str, float | None]:
    """One metric's per-sample scores of a run (sample id -> score; empty if it did not run)."""
    from unified_bench.results import read_report

    report = read_report(run_dir)
    if metric not in {m.name for m in report.metrics}:
        return {}
    return {s.sample_id: v for s, v in zip(report.samples, report.metric(metric).values)}


#: resamples and seed of the RL evaluator's paired bootstrap (the same interval for the same scores)
BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED = 1000, 0


def _mean_difference(before, after, axis=-1):
    import numpy as np

    return np.mean(after - before, axis=axis)


def paired_bootstrap_ci(
    before: Sequence[float | None],
    after: Sequence[float | None],
    *,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval | None:
    """Paired percentile-bootstrap interval of ``mean(after - before)`` over the samples where both
    are finite (``scipy.stats.bootstrap`` with ``paired=True``: samples resampled as pairs).

    None without pairs; a constant difference (or a single pair) has a zero-width interval.
    """
    import numpy as np
    from scipy.stats import bootstrap

    if len(before) != len(after):
        raise ValueError("paired samples must have the same length")
    pairs = np.array([(x, y) for x, y in zip(before, after) if x is not None and y is not None], dtype=np.float64).reshape(-1, 2)
    pairs = pairs[np.isfinite(pairs).all(axis=1)]
    if not len(pairs):
        return None
    xs, ys = pairs[:, 0], pairs[:, 1]
    estimate = float(_mean_difference(xs, ys))
    method = "paired percentile bootstrap (scipy.stats.bootstrap)"
    if len(pairs) < 2 or np.ptp(ys - xs) == 0:
        return Interval(estimate, estimate, estimate, len(pairs), level, resamples, method)
    result = bootstrap(
        (xs, ys), _mean_difference, paired=True, vectorized=True, n_resamples=resamples, confidence_level=level,
        method="percentile", rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), len(pairs), level, resamples, method)


def paired_improvement(before: tuple[str, str | Path], after: tuple[str, str | Path], metric: str) -> Improvement:
    """Paired difference ``after - before`` of ``metric`` over the samples both runs scored."""
    a, b = per_sample_scores(before[1], metric), per_sample_scores(after[1], metric)
    ids = sorted(set(a) & set(b))
    xs, ys = [a[i] for i in ids], [b[i] for i in ids]
    ci = paired_bootstrap_ci(xs, ys)
    if ci is None:
        return Improvement(before[0], after[0], metric, None, None, None, 0)
    return Improvement(before[0], after[0], metric, ci.estimate, ci.low, ci.high, ci.n)


def paired_cycle_improvement(before: tuple[str, Any], after: tuple[str, Any], metric: str, cycle: int | str) -> CycleImprovement:
    """:func:`paired_improvement` at cycle ``cycle`` of two multi-cycle runs (scores against the
    original), or of each sample's drop from cycle 1 to the last (``cycle="drop"``). Each run is
    ``(name, ScoreReport)``: read a stage's report once and pass it to every comparison."""

    def scores(report: Any) -> dict[str, float | None]:
        part = report.drop() if cycle == "drop" else report.at_cycle(int(cycle))
        if metric not in {m.name for m in part.metrics}:
            return {}
        return {s.sample_id: v for s, v in zip(part.samples, part.metric(metric).values)}

    a, b = scores(before[1]), scores(after[1])
    ids = sorted(set(a) & set(b))
    ci = paired_bootstrap_ci([a[i] for i in ids], [b[i] for i in ids])
    if ci is None:
        return CycleImprovement(before[0], after[0], metric, None, None, None, 0, cycle)
    return CycleImprovement(before[0], after[0], metric, ci.estimate, ci.low, ci.high, ci.n, cycle)


class EncoderWithRenderer:
    """A checkpoint's encoder with Shapes' exact renderer as decoder (an ideal frozen decoder).

    It measures what the captions convey, independent of how well the decoder reads them —
    the evaluation that matches G4U runs with ``reconstruction="renderer"``.
    """

    def __new__(cls, checkpoint: str, batch_size: int):
        from uae_reference.adapter import UAEReferenceAdapter, UAEReferenceConfig
        from uae_reference.rl.g4u import render_captions
        from unified_bench.adapters.base import Capabilities

        class _Adapter(UAEReferenceAdapter):
            name = "uae-reference+shapes-renderer"

            def generate(self, prompts, *, seeds, size, sample_ids: list[str] | None = None):
                side = self.model.settings.image_size
                return render_captions(list(prompts), list(seeds), side)

            def generation_settings(self, size):
                from unified_bench.core.protocol import ExecutedGeneration

                side = self.model.settings.image_size
                return ExecutedGeneration(side, side, 0, 0.0, scheduler="none (Shapes renderer of the parsed caption)", dtype="uint8")

            def describe(self):
                return {**super().describe(), "decoder": "Shapes renderer of the parsed caption (ideal decoder)"}

        adapter = _Adapter(UAEReferenceConfig(checkpoint=checkpoint, batch_size=batch_size))
        side = adapter.model.settings.image_size
        adapter.capabilities = Capabilities(max_batch_size=batch_size, native_resolution=(side, side), deterministic=True)
        return adapter


def evaluate_stage(
    name: str,
    checkpoint: str | Path,
    out: str | Path,
    *,
    limit: int | None,
    split: str = "test",
    metrics: Sequence[str] = EVAL_METRICS,
    seed: int = 0,
    batch_size: int = 50,
    model_name: str = "uae-reference",
    model_args: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    reconstruction: str = "decoder",
    curve_csv: str | Path | None = None,
    label: str | None = None,
    trip: str = "image",
    cycles: int = 1,
    note: str | None = None,
) -> StageEval:
    """``unified-bench eval`` of one checkpoint on Shapes; returns its means and CIs (cycle 1).

    ``trip`` and ``cycles`` are ``unified-bench eval``'s ``--trip`` and ``--cycles``: a run of
    several cycles also returns its ``cycle_curves``; extending a finished run to more cycles
    (``resume=True``) computes only the new cycles.

    ``label`` is the run's display label (``--name``); default: :func:`stage_label`, e.g.
    ``"uae-tiny g4u"`` (``"uae-tiny g4u (renderer)"`` with the renderer), so every stage's run
    is told apart on the leaderboard.

    ``reconstruction="renderer"`` replaces the checkpoint's decoder by Shapes' exact renderer
    of the parsed caption (:class:`EncoderWithRenderer`). The run record's ``training`` names
    the checkpoint and its training curve when ``curve_csv`` is given.
    """
    from unified_bench.core.run_lock import RunDirLock

    # one process per run directory, from copying the curve in to writing results.json
    with RunDirLock(out, command=f"uae-reference rl evaluate ({name}: {checkpoint})"):
        return _evaluate_stage(
            name, checkpoint, out, limit=limit, split=split, metrics=metrics, seed=seed, batch_size=batch_size,
            model_name=model_name, model_args=model_args, resume=resume, progress=progress,
            reconstruction=reconstruction, curve_csv=curve_csv, label=label, trip=trip, cycles=cycles, note=note,
        )


def _evaluate_stage(
    name: str,
    checkpoint: str | Path,
    out: str | Path,
    *,
    limit: int | None,
    split: str,
    metrics: Sequence[str],
    seed: int,
    batch_size: int,
    model_name: str,
    model_args: dict[str, Any] | None,
    resume: bool,
    progress: bool,
    reconstruction: str,
    curve_csv: str | Path | None,
    label: str | None,
    trip: str = "image",
    cycles: int = 1,
    note: str | None = None,
) -> StageEval:
    from unified_bench.runner.eval import EvalConfig, run_eval
    from uae_reference.adapter import UAEReferenceAdapter, UAEReferenceConfig

    if reconstruction == "renderer":
        adapter = EncoderWithRenderer(str(checkpoint), batch_size)
        model_name = adapter.name
    elif reconstruction == "decoder":
        adapter = UAEReferenceAdapter(UAEReferenceConfig(checkpoint=str(checkpoint), batch_size=batch_size))
    else:
        raise ValueError("reconstruction must be 'decoder' or 'renderer'")
    config = EvalConfig(
        model=model_name,
        data="shapes",
        out=Path(out),
        model_args=model_args if model_args is not None else {"checkpoint": str(checkpoint), "reconstruction": reconstruction},
        data_args={"split": split},
        metrics=list(metrics),
        seed=seed,
        limit=limit,
        batch_size=batch_size,
        resume=resume,
        progress=progress,
        command=f"uae-reference rl evaluate ({name}: {checkpoint})",
        name=label if label is not None else stage_label(name, checkpoint) + (" (renderer)" if reconstruction == "renderer" else ""),
        # a stage trained here has its curve (or a note on its evidence); a starting checkpoint is only evaluated
        training=(
            training_record(out, checkpoint=str(checkpoint), curve_csv=curve_csv, note=note)
            if curve_csv is not None or note is not None
            else None
        ),
        trip=trip,
        cycles=cycles,
    )
    outcome = run_eval(config, adapter=adapter)
    adapter.close()
    data = outcome.score.results
    means = {m: data["statistics_by_model"][m]["average_similarity"] for m in metrics}
    ci95 = {m: [data["confidence_intervals"][m]["low"], data["confidence_intervals"][m]["high"]] for m in metrics}
    n = len(data["samples"])
    curves = data.get("cycle_curves") if cycles > 1 else None
    return StageEval(name, str(checkpoint), str(out), means, ci95, n, curves=curves)


def stage_label(name: str, checkpoint: str | Path) -> str:
    """``"uae-<preset> <stage>"`` (the checkpoint's ``uae_config.json`` preset), e.g.
    ``"uae-tiny pre-rl"``; ``"uae-reference <stage>"`` when the checkpoint names no preset."""
    preset = None
    try:
        preset = json.loads((Path(checkpoint) / "uae_config.json").read_text(encoding="utf-8")).get("preset")
    except (OSError, ValueError, AttributeError):
        pass
    family = f"uae-{preset}" if isinstance(preset, str) and preset.strip() else "uae-reference"
    return f"{family} {name}"


def training_record(
    run_dir: str | Path,
    *,
    checkpoint: str,
    curve_csv: str | Path | None,
    trainer: str = "uae_reference.rl",
    note: str | None = None,
) -> dict[str, Any]:
    """The run record's ``training`` block for a checkpoint evaluated into ``run_dir``; the
    curve CSV is copied into the run directory (``train/curve.csv``) so the run is self-contained.
    ``note``: what the committed evidence says of the stage (shown on the leaderboard)."""
    import shutil

    training: dict[str, Any] = {"trainer": trainer, "checkpoint": checkpoint}
    if note is not None:
        training["note"] = note
    if curve_csv is not None:
        target = Path(run_dir) / "train" / "curve.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(curve_csv, target)
        training["curve_csv"] = "train/curve.csv"
    return training


def evaluate_stages(
    checkpoints: Sequence[tuple[str, str | Path]],
    out: str | Path,
    *,
    limit: int | None,
    split: str = "test",
    metrics: Sequence[str] = EVAL_METRICS,
    seed: int = 0,
    batch_size: int = 50,
    model_args: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    num_threads: int = 1,
    reconstruction: str = "decoder",
    curves: dict[str, str | Path] | None = None,
    trip: str = "image",
    cycles: int = 1,
    notes: dict[str, str] | None = None,
) -> EvaluationReport:
    """Evaluate each (name, checkpoint) in order and the paired change between consecutive ones
    (and from the first to the last); writes ``rl_evaluation.json`` and ``.md`` into ``out``.

    ``num_threads`` (torch threads; 0 keeps torch's default): 1 because the tiny model's
    tensors are small and a shared CPU makes extra threads spin-wait. ``curves`` maps a stage
    name to its training curve CSV, recorded in that run's ``training``; ``notes`` a stage name
    to what the committed evidence says of it (``training.note``).

    ``trip``/``cycles``: the round trip and how many times it is chained (the text trip scores
    :data:`TEXT_EVAL_METRICS` unless ``metrics`` is given); with several cycles the report adds,
    per pair of stages, the paired change at every later cycle and of each sample's drop.
    A run directory that exists is resumed, so ``cycles=3`` over a finished one-cycle folder
    computes cycles 2 and 3 only.
    """
    import torch

    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if trip == "text" and tuple(metrics) == EVAL_METRICS:
        metrics = TEXT_EVAL_METRICS
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = []
    for name, checkpoint in checkpoints:
        run_dir = out / name
        resume = (run_dir / "run.json").exists()
        stages.append(
            evaluate_stage(
                name, checkpoint, run_dir, limit=limit, split=split, metrics=metrics, seed=seed, batch_size=batch_size,
                model_args=(model_args or {}).get(name), resume=resume, progress=progress, reconstruction=reconstruction,
                curve_csv=(curves or {}).get(name), trip=trip, cycles=cycles, note=(notes or {}).get(name),
            )
        )
    if "shapes-attr" in metrics and trip == "image":
        from unified_bench.tracks.shapes.oracle import ShapesOracle

        oracle = ShapesOracle()  # one load for every stage
        for stage in stages:
            stage.breakdown = round_trip_breakdown(stage.run_dir, oracle=oracle)
    report = EvaluationReport(stages, split=split, limit=limit, trip=trip, cycles=cycles)
    pairs = list(zip(stages[:-1], stages[1:]))
    if len(stages) > 2:
        pairs.append((stages[0], stages[-1]))
    for a, b in pairs:
        for metric in metrics:
            report.improvements.append(paired_improvement((a.name, a.run_dir), (b.name, b.run_dir), metric))
    if cycles > 1:
        from unified_bench.results import read_report

        reports = {s.name: read_report(s.run_dir) for s in stages}  # one read per stage, not per comparison
        for a, b in pairs:
            for at in [*range(2, cycles + 1), "drop"]:
                for metric in metrics:
                    report.cycle_improvements.append(
                        paired_cycle_improvement((a.name, reports[a.name]), (b.name, reports[b.name]), metric, at)
                    )
    (out / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    (out / REPORT_FILE).with_suffix(".md").write_text(report.markdown())
    return report


#: the per-sample file of one stage's multi-cycle run: ``cycle_scores_csv`` writes it,
#: ``read_cycle_scores`` reads it back (every cycle against the original)
CYCLE_SCORES_HEADER = ("sample_id", "cycle")


def cycle_scores_csv(run_dir: str | Path, path: str | Path) -> Path:
    """Write every cycle's per-sample scores (against the original) of a multi-cycle run to a
    compact CSV: ``sample_id, cycle`` and one column per metric key (empty: not scored); the
    evidence the stage comparison of ``rl evaluate --cycles`` can be recomputed from."""
    import csv

    from unified_bench.results import read_report

    report = read_report(run_dir)
    parts = [(entry.cycle, entry.vs_original) for entry in report.cycles] or [(1, report)]
    names = [m.name for m in parts[0][1].metrics]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*CYCLE_SCORES_HEADER, *names])
        for cycle, part in parts:
            columns = {m.name: m.values for m in part.metrics}
            for index, sample in enumerate(part.samples):
                cells = [columns[n][index] if n in columns else None for n in names]
                writer.writerow([sample.sample_id, cycle, *("" if v is None else repr(float(v)) for v in cells)])
    return path


def read_cycle_scores(path: str | Path) -> dict[int, dict[str, dict[str, float]]]:
    """``cycle -> metric -> sample id -> score`` from a :func:`cycle_scores_csv` file."""
    import csv

    out: dict[int, dict[str, dict[str, float]]] = {}
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            cycle = out.setdefault(int(row["cycle"]), {})
            for key, value in row.items():
                if key not in CYCLE_SCORES_HEADER and value != "":
                    cycle.setdefault(key, {})[row["sample_id"]] = float(value)
    return out


def recompute_cycle_improvement(before: str | Path, after: str | Path, metric: str, cycle: int | str) -> Interval | None:
    """The paired change of :func:`paired_cycle_improvement`, from two :func:`cycle_scores_csv`
    files alone (``cycle="drop"``: each sample's first cycle minus its last)."""
    a, b = read_cycle_scores(before), read_cycle_scores(after)

    def scores(data: dict[int, dict[str, dict[str, float]]]) -> dict[str, float]:
        if cycle != "drop":
            return data[int(cycle)].get(metric, {})
        first, last = data[min(data)].get(metric, {}), data[max(data)].get(metric, {})
        return {sid: first[sid] - last[sid] for sid in first if sid in last}

    xa, xb = scores(a), scores(b)
    ids = sorted(set(xa) & set(xb))
    return paired_bootstrap_ci([xa[i] for i in ids], [xb[i] for i in ids])


def export_cycle_scores(out: str | Path, target: str | Path) -> list[Path]:
    """Copy an ``rl evaluate --cycles`` folder's report into ``target`` and write each stage's
    :func:`cycle_scores_csv` there: the compact evidence of a stage comparison over cycles."""
    import shutil

    out, target = Path(out), Path(target)
    report = json.loads((out / REPORT_FILE).read_text())
    target.mkdir(parents=True, exist_ok=True)
    written = []
    shutil.copyfile(out / REPORT_FILE, target / REPORT_FILE)
    markdown = target / Path(REPORT_FILE).with_suffix(".md").name
    markdown.write_text(EvaluationReport.from_dict(report).markdown())  # the report's own tables
    written += [target / REPORT_FILE, markdown]
    for stage in report["stages"]:
        written.append(cycle_scores_csv(out / stage["name"], target / f"{stage['name']}.csv"))
    return written


if __name__ == "__main__":  # python -m uae_reference.rl.evaluate --export-cycle-scores RUN_FOLDER TARGET
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "--export-cycle-scores":
        sys.exit("usage: python -m uae_reference.rl.evaluate --export-cycle-scores RL_EVALUATE_OUT TARGET")
    for path in export_cycle_scores(sys.argv[2], sys.argv[3]):
        print(path)
