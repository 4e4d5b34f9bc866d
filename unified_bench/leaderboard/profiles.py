"""A model's unification profile: its runs on one track grouped across trips, the numbers of
each trip, the drift over cycles, the cycle curves and each sample's chain, as plain data for
the templates (no HTML here; the curves' SVG is drawn by ``cycles.html.jinja`` from the
coordinates computed here, so every label is escaped by the template).

A run's trip is part of its identity, so the image trip and the text trip of one model are two
run directories; they are grouped by the model as recorded (``run.model.name`` and
``run.model.args``) on the same track. The track table ranks image-trip runs only; a text-trip
run's numbers appear beside its model's image-trip row.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unified_bench.core.stats import bootstrap_joint_ci, paired_difference_ci, paired_joint_difference
from unified_bench.leaderboard.entries import ChainStep, RunEntry, SampleView, model_name
from unified_bench.leaderboard.tracks import Track
from unified_bench.leaderboard.views import MISSING, ValueCell, fmt, stat_cell, track_score, truncate, x100

TRIPS = ("image", "text")


# ---- grouping --------------------------------------------------------------------------------


def model_identity(entry: RunEntry) -> tuple[str, str]:
    """(model name, its arguments as canonical JSON): runs of one model across trips share it.
    A record without a model falls back to the run's label."""
    model = entry.run.get("model")
    if isinstance(model, Mapping):
        name = model.get("name") or model.get("preset") or model.get("adapter")
        if isinstance(name, Mapping):
            name = name.get("name")
        args = model.get("args") or {}
    else:
        name, args = None, {}
    label = name if isinstance(name, str) and name else model_name(entry.run)
    return label, json.dumps(args, sort_keys=True, ensure_ascii=False, default=str)


@dataclass
class TripGroup:
    """One model's runs on one track, by trip (each list sorted by model label, then run id)."""

    track: Track
    identity: tuple[str, str]
    image: list[RunEntry] = field(default_factory=list)
    text: list[RunEntry] = field(default_factory=list)

    @property
    def runs(self) -> list[RunEntry]:
        return self.image + self.text

    @property
    def has_profile(self) -> bool:
        """Something beyond one default run to show: a text trip, or a run of several cycles."""
        return bool(self.text) or any(len(e.cycles) > 1 for e in self.image)


def group_runs(track: Track, entries: Sequence[RunEntry]) -> list[TripGroup]:
    """The track's runs grouped by model across trips, in a stable order."""
    groups: dict[tuple[str, str], TripGroup] = {}
    for entry in sorted(entries, key=lambda e: (e.model_name, e.run_id)):
        key = model_identity(entry)
        group = groups.setdefault(key, TripGroup(track, key))
        (group.text if entry.trip_name == "text" else group.image).append(entry)
    return [groups[key] for key in sorted(groups)]


def text_partner(entry: RunEntry, group: TripGroup) -> RunEntry | None:
    """The text-trip run shown beside an image-trip run: one on the same samples first (same ids
    and reference hashes), then the one with the most cycles, then the newest, then by run id."""
    if not group.text:
        return None
    mine = _signature(entry)

    def key(text: RunEntry) -> tuple:
        created = text.run.get("created") if isinstance(text.run.get("created"), str) else ""
        return (_signature(text) != mine, -len(text.cycles), _negated(created), text.run_id)

    return min(group.text, key=key)


def _negated(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


def _signature(entry: RunEntry) -> tuple[tuple[str, str | None], ...]:
    return tuple(sorted((s.sample_id, s.reference_sha256) for s in entry.samples))


# ---- numbers -----------------------------------------------------------------------------------


def mean_of_means(means: Mapping[str, float]) -> float:
    return sum(means.values()) / len(means)


def _columns(scores: Mapping[str, Mapping[str, float | None]], ids: Sequence[str], names: Sequence[str]):
    return {name: [scores.get(sid, {}).get(name) for sid in ids] for name in names}


def score_at(entry: RunEntry, track: Track, index: int) -> ValueCell:
    """The track score (x100, 95% CI) of cycle ``index`` (0 = cycle 1) against the original."""
    if index == 0:
        return track_score(entry, track)
    if index >= len(entry.cycles):
        return ValueCell(None)
    cycle = entry.cycles[index]
    if track.score_key is None:
        return stat_cell(cycle.stats.get(track.score_metric or ""))
    ids = sorted(cycle.scores)
    if not all(cycle.stats.get(m) is not None and cycle.stats[m].mean is not None for m in track.metrics):
        return ValueCell(None)
    ci = bootstrap_joint_ci(_columns(cycle.scores, ids, track.metrics), mean_of_means, scale=100.0)
    return ValueCell(None) if ci is None else ValueCell(ci.estimate, ci.low, ci.high, ci.n)


def drift(entry: RunEntry, track: Track) -> ValueCell:
    """The drop of the track score from cycle 1 to the last cycle (x100; positive: lost), with
    its paired 95% bootstrap CI over the samples scored in both; missing for one cycle."""
    if len(entry.cycles) < 2:
        return ValueCell(None)
    first, last = entry.cycles[0], entry.cycles[-1]
    ids = sorted(set(first.scores) & set(last.scores))
    if track.score_key is None:
        name = track.score_metric or ""
        ci = paired_difference_ci(
            [last.scores[sid].get(name) for sid in ids], [first.scores[sid].get(name) for sid in ids]
        )
        return ValueCell(None) if ci is None else ValueCell(ci.estimate * 100, ci.low * 100, ci.high * 100, ci.n)
    if not all(m in first.stats and m in last.stats for m in track.metrics):
        return ValueCell(None)
    result = paired_joint_difference(
        _columns(last.scores, ids, track.metrics), _columns(first.scores, ids, track.metrics), mean_of_means, scale=100.0
    )
    if result is None:
        return ValueCell(None)
    interval, _ = result
    return ValueCell(interval.estimate, interval.low, interval.high, interval.n)


def drift_rate(entry: RunEntry, cell: ValueCell) -> str:
    """The drop per cycle after the first (x100), as the telephone-game papers report drift."""
    if cell.value is None or len(entry.cycles) < 2:
        return MISSING
    return fmt(cell.value / (len(entry.cycles) - 1))


@dataclass
class TripNumbers:
    """What a track table row shows of the trips: the text trip's track score and the drift of
    each trip's track score (``text`` and ``text_drift`` come from the text partner)."""

    text: ValueCell
    text_page: str | None
    text_cycles: int
    image_drift: ValueCell
    image_cycles: int
    text_drift: ValueCell

    @property
    def any(self) -> bool:
        return any(c.value is not None for c in (self.text, self.image_drift, self.text_drift))

    def to_json(self) -> dict[str, Any]:
        def cell(c: ValueCell) -> dict[str, Any]:
            return {"value": c.value, "ci95_low": c.low, "ci95_high": c.high, "n": c.n}

        return {
            "text_trip": cell(self.text),
            "text_cycles": self.text_cycles,
            "image_drift": cell(self.image_drift),
            "image_cycles": self.image_cycles,
            "text_drift": cell(self.text_drift),
        }


def trip_numbers(entry: RunEntry, partner: RunEntry | None, track: Track, text_page: str | None) -> TripNumbers:
    return TripNumbers(
        text=track_score(partner, track) if partner is not None else ValueCell(None),
        text_page=text_page if partner is not None else None,
        text_cycles=(len(partner.cycles) or 1) if partner is not None else 0,
        image_drift=drift(entry, track),
        image_cycles=len(entry.cycles) or 1,
        text_drift=drift(partner, track) if partner is not None else ValueCell(None),
    )


def comparison_scores(
    entry: RunEntry, partner: RunEntry | None, track: Track
) -> tuple[dict[str, dict[str, float | None]], list[str]]:
    """Per-sample scores a paired comparison can use beyond the track's columns, keyed by the
    image-trip run's sample ids: ``cycle k: m`` (image trip, cycle k against the original),
    ``text trip: m`` and ``text trip cycle k: m`` (the text partner, where its sample has the
    same id and reference image). Returns the scores and their keys in display order."""
    metrics = list(track.metrics)
    ids = [s.sample_id for s in entry.samples]
    out: dict[str, dict[str, float | None]] = {sid: {} for sid in ids}
    keys: list[str] = []

    def add(key: str, values: Mapping[str, float | None]) -> None:
        keys.append(key)
        for sid in ids:
            out[sid][key] = values.get(sid)

    for index, cycle in enumerate(entry.cycles[1:], start=2):
        for metric in metrics:
            add(f"cycle {index}: {metric}", {sid: cycle.scores.get(sid, {}).get(metric) for sid in ids})
    if partner is not None:
        same = _same_samples(entry.samples, partner.samples)
        by_id = {s.sample_id: s for s in partner.samples}
        for metric in metrics:
            add(f"text trip: {metric}", {sid: by_id[sid].scores.get(metric) for sid in same})
        for index, cycle in enumerate(partner.cycles[1:], start=2):
            for metric in metrics:
                add(f"text trip cycle {index}: {metric}", {sid: cycle.scores.get(sid, {}).get(metric) for sid in same})
    return out, keys


def _same_samples(mine: Sequence[SampleView], theirs: Sequence[SampleView]) -> set[str]:
    """Sample ids present in both with the same recorded reference hash (never a missing one)."""
    hashes = {s.sample_id: s.reference_sha256 for s in theirs}
    return {s.sample_id for s in mine if s.reference_sha256 and hashes.get(s.sample_id) == s.reference_sha256}


# ---- cycle curves ------------------------------------------------------------------------------

PLOT_WIDTH = 520
PLOT_HEIGHT = 260
MARGIN = {"left": 56, "right": 16, "top": 16, "bottom": 44}


@dataclass(frozen=True)
class CyclePoint:
    cycle: int
    original: ValueCell  # x100, vs the original
    previous: ValueCell | None  # x100, vs the previous cycle (None for cycle 1)


@dataclass
class Series:
    """One line of a plot in SVG coordinates: its path, its CI band and its markers."""

    key: str  # "original" or "previous" (the CSS class)
    label: str
    line: str  # SVG path data ("" when no point)
    band: str  # SVG path data of the closed CI band ("" when no CI)
    markers: list[tuple[float, float, str]]  # (x, y, tooltip text)


@dataclass
class CyclePlot:
    """One metric's curve over the cycles of one trip run, with everything the SVG needs."""

    id: str
    trip: str
    metric: str
    run_id: str
    title: str
    description: str
    points: list[CyclePoint]
    series: list[Series]
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    width: int = PLOT_WIDTH
    height: int = PLOT_HEIGHT
    margin: dict[str, int] = field(default_factory=lambda: dict(MARGIN))

    @property
    def plot_bottom(self) -> int:
        return self.height - self.margin["bottom"]

    @property
    def plot_right(self) -> int:
        return self.width - self.margin["right"]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high] (steps of 1, 2, 2.5 or 5 x 10^k)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("ticks need finite bounds")
    if high <= low:
        low, high = low - 1.0, high + 1.0
    raw = (high - low) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9)
    last = max(first + 1, math.ceil(high / step - 1e-9))
    return [round(k * step, 10) for k in range(first, last + 1)]


def cycle_points(entry: RunEntry, metric: str) -> list[CyclePoint]:
    return [
        CyclePoint(
            cycle.cycle,
            stat_cell(cycle.stats.get(metric)),
            stat_cell(cycle.previous.get(metric)) if cycle.previous else None,
        )
        for cycle in entry.cycles
    ]


def cycle_plot(entry: RunEntry, metric: str, plot_id: str) -> CyclePlot:
    """The curve of ``metric`` over ``entry``'s cycles: mean x100 against the original and
    against the previous cycle, each with its 95% CI band."""
    points = cycle_points(entry, metric)
    values = [
        v
        for p in points
        for cell in (p.original, p.previous)
        if cell is not None
        for v in (cell.value, cell.low, cell.high)
        if v is not None
    ]
    ticks = nice_ticks(min(values), max(values)) if values else [0.0, 50.0, 100.0]
    y_min, y_max = ticks[0], ticks[-1]
    left, top = MARGIN["left"], MARGIN["top"]
    right, bottom = PLOT_WIDTH - MARGIN["right"], PLOT_HEIGHT - MARGIN["bottom"]
    cycles = [p.cycle for p in points]
    span = max(1, cycles[-1] - cycles[0]) if cycles else 1

    def x(cycle: int) -> float:
        if len(cycles) < 2:
            return round((left + right) / 2, 2)
        return round(left + (cycle - cycles[0]) / span * (right - left), 2)

    def y(value: float) -> float:
        return round(bottom - (value - y_min) / (y_max - y_min) * (bottom - top), 2)

    series = []
    for key, label, pick in (
        ("original", "vs the original", lambda p: p.original),
        ("previous", "vs the previous cycle", lambda p: p.previous),
    ):
        cells = [(p.cycle, pick(p)) for p in points]
        cells = [(c, cell) for c, cell in cells if cell is not None]
        if not any(cell.value is not None for _, cell in cells):
            continue
        series.append(
            Series(
                key,
                label,
                _line([(x(c), y(cell.value)) if cell.value is not None else None for c, cell in cells]),
                _band([(x(c), y(cell.low), y(cell.high)) for c, cell in cells if cell.low is not None and cell.high is not None]),
                [
                    (x(c), y(cell.value), f"cycle {c}, {label}: {cell.text} {cell.ci_text}".strip())
                    for c, cell in cells
                    if cell.value is not None
                ],
            )
        )
    trip = entry.trip_name
    title = f"{metric} over {len(points)} cycles, {trip} trip"
    return CyclePlot(
        id=plot_id,
        trip=trip,
        metric=metric,
        run_id=entry.run_id,
        title=title,
        description=_describe(metric, points),
        points=points,
        series=series,
        x_ticks=[(x(c), str(c)) for c in cycles],
        y_ticks=[(y(t), f"{t:g}") for t in ticks],
    )


def _describe(metric: str, points: Sequence[CyclePoint]) -> str:
    original = ", ".join(f"cycle {p.cycle} {p.original.text}" for p in points)
    previous = ", ".join(f"cycle {p.cycle} {p.previous.text}" for p in points if p.previous is not None)
    text = f"Mean {metric} x100 per cycle against the original: {original}."
    if previous:
        text += f" Against the previous cycle (dashed): {previous}."
    return text + " Shaded bands are 95% bootstrap CIs over samples."


def _line(points: Sequence[tuple[float, float] | None]) -> str:
    """SVG path through the points; a None breaks the line (a cycle with no mean)."""
    parts, pen_down = [], False
    for point in points:
        if point is None:
            pen_down = False
            continue
        parts.append(f"{'L' if pen_down else 'M'}{point[0]:g},{point[1]:g}")
        pen_down = True
    return " ".join(parts)


def _band(points: Sequence[tuple[float, float, float]]) -> str:
    """A closed SVG path along the CI highs and back along the lows."""
    if not points:
        return ""
    upper = [f"{x:g},{high:g}" for x, _, high in points]
    lower = [f"{x:g},{low:g}" for x, low, _ in reversed(points)]
    if len(points) == 1:  # one cycle: a thin bar rather than nothing
        x, low, high = points[0]
        return f"M{x - 3:g},{high:g} L{x + 3:g},{high:g} L{x + 3:g},{low:g} L{x - 3:g},{low:g} Z"
    return "M" + " L".join(upper + lower) + " Z"


def curve_metrics(entry: RunEntry) -> list[str]:
    """The metrics a trip run scored in any cycle (no sub-scores), in the file's order."""
    names: list[str] = []
    for cycle in entry.cycles:
        names += [k for k in cycle.stats if "." not in k and k not in names]
    return names


# ---- the profile on a model page ---------------------------------------------------------------


@dataclass
class TripLine:
    """One run of the group in the profile table."""

    trip: str
    entry: RunEntry
    page: str
    this_run: bool
    cycles: int
    first: ValueCell  # track score, cycle 1
    last: ValueCell  # track score, last cycle (vs the original)
    drop: ValueCell
    rate: str


@dataclass
class Profile:
    """One model's unification profile on one track: a line per run, the cycle curves."""

    track: Track
    lines: list[TripLine]
    plots: list[CyclePlot]
    #: this page's run is a text-trip run, which the track table shows beside the image trip
    text_run_here: bool = False


def profile_for(group: TripGroup, entry: RunEntry, pages: Mapping[str, str]) -> Profile:
    track = group.track
    lines = []
    plots: list[CyclePlot] = []
    for run in group.runs:
        count = len(run.cycles) or 1
        drop = drift(run, track)
        lines.append(
            TripLine(
                run.trip_name,
                run,
                pages[run.run_id],
                run.run_id == entry.run_id,
                count,
                score_at(run, track, 0),
                score_at(run, track, count - 1) if count > 1 else ValueCell(None),
                drop,
                drift_rate(run, drop),
            )
        )
        if count > 1:
            for metric in curve_metrics(run):
                plot_id = f"cycles-{track.slug}-{pages[run.run_id]}-{len(plots)}"
                plots.append(cycle_plot(run, metric, plot_id))
    return Profile(track, lines, plots, entry.trip_name == "text")


# ---- the gallery chain ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainCell:
    """One step of a sample's chain: an image (``src`` a thumbnail, or a placeholder ``state``)
    or a text (``text``; ``state`` when there is none)."""

    kind: str  # "image" or "text"
    label: str
    src: str | None = None
    text: str | None = None
    #: "" when shown; "not kept" (pruned from the run directory), "not available" (cannot be
    #: decoded), "not produced" (the cycle failed or did not run for this sample)
    state: str = ""


@dataclass
class ChainItem:
    sample_id: str
    cells: list[ChainCell]
    #: (metric, [score x100 per cycle vs the original])
    scores: list[tuple[str, list[str]]]


def chain_item(entry: RunEntry, sample: SampleView, thumbs, metrics: Sequence[str]) -> ChainItem:
    """The image trip: original -> caption -> image -> caption -> image ...; the text trip:
    prompt -> image -> caption -> image -> caption ..."""
    cells: list[ChainCell] = []
    steps = sample.chain
    if entry.trip_name == "text":
        prompt = steps[0].prompt if steps else None
        cells.append(_text_cell("prompt", prompt, steps[0].recorded if steps else False))
    else:
        cells.append(_image_cell("original", sample.reference_file, thumbs, recorded=True))
    for step in steps:
        caption = _text_cell(f"cycle {step.cycle} caption", step.caption, step.recorded)
        image = _image_cell(f"cycle {step.cycle} image", step.image, thumbs, recorded=step.recorded)
        cells += [image, caption] if entry.trip_name == "text" else [caption, image]
    scores = [
        (metric, [fmt(x100(cycle.scores.get(sample.sample_id, {}).get(metric))) for cycle in entry.cycles])
        for metric in metrics
    ]
    return ChainItem(sample.sample_id, cells, scores)


def _text_cell(label: str, text: str | None, recorded: bool) -> ChainCell:
    if text is not None:
        return ChainCell("text", label, text=truncate(text))
    return ChainCell("text", label, state="not kept" if recorded else "not produced")


def _image_cell(label: str, path, thumbs, *, recorded: bool) -> ChainCell:
    if not recorded:
        return ChainCell("image", label, state="not produced")
    if path is None:
        return ChainCell("image", label, state="not kept")
    src = thumbs(path)
    return ChainCell("image", label, src=src, state="" if src else "not available")


def chain_files(entry: RunEntry) -> list:
    """Every image file a trip run's chains show (for the thumbnailer's parallel pass)."""
    return [step.image for sample in entry.samples for step in sample.chain if step.image is not None]


def groups_by_run(groups: Sequence[TripGroup]) -> dict[str, list[TripGroup]]:
    out: dict[str, list[TripGroup]] = defaultdict(list)
    for group in groups:
        for run in group.runs:
            out[run.run_id].append(group)
    return out
