"""What each page shows, as plain data for the templates (no HTML here).

Every string that came from an entry stays a plain ``str``: the templates autoescape it, and
data for scripts goes through :func:`script_json`. Numbers are shown x100 (the paper's scale)
with two decimals; a missing or non-finite number is shown as missing and never averaged.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from unified_bench.leaderboard.entries import ReportedEntry, RunEntry, SampleView, Stat
from unified_bench.core.protocol import as_executed
from unified_bench.leaderboard.tracks import ProtocolCheck, Track, check_protocol, check_run, executed_summary, protocol_summary
from unified_bench.leaderboard.ranking import REPORTED_NOTE
from unified_bench.leaderboard.verification import REPORTED, Verification, verify_run

if TYPE_CHECKING:
    from unified_bench.leaderboard.profiles import ChainItem, Profile, TripNumbers

MISSING = "—"
BEST_WORST_COUNT = 3
MAX_TREE_DEPTH = 6
MAX_TREE_ITEMS = 200
MAX_TEXT = 20_000


# ---- small pure helpers ----------------------------------------------------------------------


def script_json(data: Any) -> Markup:
    """JSON safe to place inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``-style escapes so no string can close the script
    element or open a comment; U+2028/2029 are escaped for old parsers.
    """
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return Markup(text)


def plot_text(text: str) -> str:
    """Plotly reads a few HTML tags in labels; entities make any such markup literal text."""
    return html.escape(text, quote=False)


def slug(label: str, key: str) -> str:
    """A safe, stable file name: readable prefix + hash of the unique key."""
    prefix = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "run"
    return f"{prefix}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:12]}"


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def x100(value: float | None) -> float | None:
    value = finite_or_none(value)
    return None if value is None else value * 100.0


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def truncate(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + f" … [{len(text) - limit} more characters]"


def word_count(text: str | None) -> int | None:
    return None if text is None else len(text.split())


@dataclass(frozen=True)
class ValueCell:
    """A number shown x100 with its CI; ``sort`` is what the table sorts on."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None
    #: a reported number's digits as its source prints them (shown instead of two decimals)
    printed: str | None = None

    @property
    def text(self) -> str:
        return self.printed if self.printed is not None and self.value is not None else fmt(self.value)

    @property
    def ci_text(self) -> str:
        if self.value is None or self.low is None or self.high is None:
            return ""
        return f"[{fmt(self.low)}, {fmt(self.high)}]"

    @property
    def sort(self) -> str:
        return "" if self.value is None else repr(round(self.value, 10))


def stat_cell(stat: Stat | None, scale: float = 100.0) -> ValueCell:
    if stat is None or finite_or_none(stat.mean) is None:
        return ValueCell(None)
    low = finite_or_none(stat.low)
    high = finite_or_none(stat.high)
    return ValueCell(
        stat.mean * scale,
        None if low is None else low * scale,
        None if high is None else high * scale,
        stat.n,
    )


# ---- track tables ----------------------------------------------------------------------------


@dataclass
class Row:
    kind: str  # "reproduced" or "reported"
    model: str
    run_id: str | None
    score: ValueCell
    cells: list[ValueCell]
    protocol_text: str
    protocol_status: str  # match / differs / unknown
    protocol_notes: list[str]
    model_page: str | None = None
    record_page: str | None = None
    citation: str | None = None
    url: str | None = None
    where: str | None = None
    statement: str | None = None
    source: str = ""
    samples: int | None = None
    errors: int | None = None
    created: str | None = None
    #: verified / unverified / reported (leaderboard.verification); only verified rows get a rank
    status: str = "unverified"
    reasons: list[str] = field(default_factory=list)
    #: 1 + rows significantly better (leaderboard.ranking): rows the set cannot separate share it
    rank: int | None = None
    #: the worst rank the row could take: ranked rows - rows significantly worse
    rank_upper: int | None = None
    #: why a verified or reported row has no rank (None for ranked and unverified rows)
    rank_note: str | None = None
    fingerprint: str | None = None
    #: the model as recorded (``run.model.name``, else adapter); ``model`` is the display label
    model_id: str | None = None
    #: a reported row: what the source states of its protocol, and what does not add up in its print
    stated_protocol: dict[str, str] = field(default_factory=dict)
    discrepancies: list[str] = field(default_factory=list)
    not_reported: list[str] = field(default_factory=list)
    #: a reported row: (label, model page) of the runs here whose preset targets it
    reproductions: list[tuple[str, str]] = field(default_factory=list)
    #: a reported row's entry id; a run row's targeted entry ids
    entry_id: str | None = None
    targets: list[str] = field(default_factory=list)
    #: a run row: the text trip's track score and each trip's drift (``leaderboard.profiles``)
    trips: TripNumbers | None = None

    @property
    def group(self) -> int:
        """Table section: 0 ranked (verified), 1 reported, 2 unranked (unverified)."""
        return {"verified": 0, "reported": 1}.get(self.status, 2)

    @property
    def rank_text(self) -> str:
        """The rank cell: "2", or "2-4" where the row could take several ranks."""
        if self.rank is None:
            return ""
        if self.rank_upper is None or self.rank_upper == self.rank:
            return str(self.rank)
        return f"{self.rank}-{self.rank_upper}"

    @property
    def search_text(self) -> str:
        return " ".join(x for x in (self.model, self.run_id or "", self.kind) if x).lower()


def track_score(entry: RunEntry, track: Track) -> ValueCell:
    if track.score_key is not None:
        block = entry.data.get(track.score_key)
        if not block:
            return ValueCell(None)
        scale = float(block.get("scale", 100)) or 100.0
        ci = block["ci95"]
        factor = 100.0 / scale
        return ValueCell(block["value"] * factor, ci["low"] * factor, ci["high"] * factor, ci.get("n"))
    return stat_cell(entry.stats.get(track.score_metric or ""))


def run_row(
    entry: RunEntry, track: Track, pages: Mapping[str, str], root: str, verification: Verification | None = None
) -> Row:
    check = check_run(entry.record, track)
    verification = verification or verify_run(entry.record, track, errors=len(entry.data["errors"]))
    notes = list(check.differences) + [f"not recorded: {f}" for f in check.unrecorded]
    return Row(
        kind="reproduced",
        model=entry.model_name,
        run_id=entry.run_id,
        score=track_score(entry, track),
        cells=[stat_cell(entry.stats.get(col.key)) for col in track.columns],
        protocol_text=executed_summary(entry.run.get("protocol_executed")),
        protocol_status=check.status,
        protocol_notes=notes,
        model_page=f"{root}models/{pages[entry.run_id]}.html",
        record_page=f"{root}runs/{pages[entry.run_id]}.html",
        source=entry.source,
        samples=len(entry.samples),
        errors=len(entry.data["errors"]),
        created=entry.run.get("created") if isinstance(entry.run.get("created"), str) else None,
        model_id=_recorded_model(entry),
        targets=[entry_id for entry_id, _ in run_targets(entry)],
        status=verification.status,
        reasons=list(verification.reasons),
        fingerprint=verification.fingerprint,
    )


def _recorded_model(entry: RunEntry) -> str | None:
    model = entry.record.model
    if model is None:
        return None
    if model.name:
        return model.name
    return model.adapter.name if model.adapter is not None else None


def reported_cell(entry: ReportedEntry, key: str) -> ValueCell:
    """A reported number on the x100 scale, shown with the source's own digits when it prints x100."""
    value = entry.scores.get(key)
    if value is None:
        return ValueCell(None)
    printed = entry.printed.get(key) if entry.scale == 100 else None
    return ValueCell(value * 100.0 / entry.scale, printed=printed)


def run_targets(entry: RunEntry) -> list[tuple[str, str]]:
    """(reported entry id, note) for each published row the run's preset targets."""
    from unified_bench.adapters.registry import preset_targets

    model = entry.record.model
    return [(t.entry, t.note) for t in preset_targets(model.name if model is not None else None)]


def reported_row(entry: ReportedEntry, track: Track) -> Row:
    def cell(key: str) -> ValueCell:
        return reported_cell(entry, key)

    if entry.protocol:
        check = check_protocol(as_executed(entry.protocol), track.protocol(), who="the source")
        status, notes = check.status, list(check.differences) + [f"not stated: {f}" for f in check.unrecorded]
        text = protocol_summary(entry.protocol)
    elif entry.stated_protocol:
        status, text = "unknown", "as the source states it (details)"
        notes = [f"{aspect}: {what}" for aspect, what in entry.stated_protocol.items()]
    else:
        status, notes, text = "unknown", ["the source's settings are not recorded in this entry"], "as in the source"
    return Row(
        kind="reported",
        model=entry.model_name,
        run_id=None,
        score=cell("score"),
        cells=[cell(col.key) for col in track.columns],
        protocol_text=text,
        protocol_status=status,
        protocol_notes=notes,
        citation=entry.citation,
        url=entry.url,
        where=entry.location,
        statement=entry.statement,
        source=entry.source,
        samples=entry.samples,
        status=REPORTED,
        stated_protocol=dict(entry.stated_protocol),
        discrepancies=list(entry.discrepancies),
        not_reported=[f"{key}: {why}" for key, why in entry.not_reported.items()],
        entry_id=entry.entry_id,
        reasons=["reported elsewhere, not reproduced here: nothing of it can be verified"],
        rank_note=REPORTED_NOTE,
    )


def sort_rows(rows: list[Row]) -> list[Row]:
    """Verified rows first, by rank (``leaderboard.ranking`` sets it), then the unranked ones;
    then reported rows, then unverified ones. Within a rank or section: best score first,
    missing scores last, ties by model name then run id."""

    def key(row: Row) -> tuple:
        value = row.score.value
        return (row.group, row.rank is None, row.rank or 0, value is None, -(value or 0.0), row.model, row.run_id or "", row.source)

    return sorted(rows, key=key)


# ---- model pages -----------------------------------------------------------------------------


@dataclass
class GalleryItem:
    sample_id: str
    reference: str | None  # site-relative thumbnail path
    reconstruction: str | None
    caption: str | None
    caption_words: int | None
    seed: int | None
    scores: list[tuple[str, str]]  # (metric, formatted x100)


@dataclass
class Extremes:
    metric: str
    best: list[tuple[GalleryItem, str]]
    worst: list[tuple[GalleryItem, str]]


@dataclass
class SideBySideLine:
    metric: str
    reproduced: ValueCell
    reported: ValueCell
    difference: str  # reproduced - reported, x100, or missing
    within_ci: str  # whether the reported number lies inside the run's 95% CI


@dataclass
class SideBySide:
    """A published (reported) row beside this run on the metrics both have: the run's preset
    targets it. A reported number has no per-sample scores, so nothing here is a test."""

    entry: ReportedEntry
    track: Track
    note: str
    lines: list[SideBySideLine]
    run_samples: int
    only_reported: list[str]  # metrics the source prints and this run lacks
    only_reproduced: list[str]  # metrics this run has and the source does not print


def side_by_side(entry: RunEntry, reported: Sequence[ReportedEntry], tracks: Sequence[Track]) -> list[SideBySide]:
    """The published rows the run's preset targets, each on the metrics both have."""
    by_id = {r.entry_id: r for r in reported}
    out = []
    for entry_id, note in run_targets(entry):
        rep = by_id.get(entry_id)
        track = next((t for t in tracks if rep is not None and t.slug == rep.track), None)
        if rep is None or track is None:
            continue
        cells = [("score", track.score_label, track_score(entry, track))]
        cells += [(col.key, col.label, stat_cell(entry.stats.get(col.key))) for col in track.columns]
        lines, only_reported, only_reproduced = [], [], []
        for key, label, mine in cells:
            theirs = reported_cell(rep, key)
            if mine.value is None and theirs.value is None:
                continue
            if mine.value is None:
                only_reported.append(label)
                continue
            if theirs.value is None:
                only_reproduced.append(label)
                continue
            inside = MISSING
            if mine.low is not None and mine.high is not None:
                inside = "yes" if mine.low <= theirs.value <= mine.high else "no"
            lines.append(SideBySideLine(label, mine, theirs, fmt(mine.value - theirs.value, signed=True), inside))
        out.append(SideBySide(rep, track, note, lines, len(entry.samples), only_reported, only_reproduced))
    return out


@dataclass
class ModelPage:
    entry: RunEntry
    page: str
    tracks: list[Track]
    stat_rows: list[tuple[str, ValueCell]]
    gallery: list[GalleryItem]
    extremes: list[Extremes]
    plots: list[dict[str, Any]]
    compare_links: list[tuple[str, str]] = field(default_factory=list)
    model_tree: dict[str, Any] | None = None  # run.model: adapter and its arguments
    #: per track: how what ran compares with the track's protocol (every deviation listed)
    protocol_checks: list[tuple[Track, ProtocolCheck]] = field(default_factory=list)
    #: per track: verified or not, with every reason (the same as the track table's row)
    verifications: list[tuple[Track, str, list[str]]] = field(default_factory=list)
    executed_text: str = ""
    #: the published rows this run's preset targets, side by side with it
    published: list[SideBySide] = field(default_factory=list)
    #: per track where the model has more than one default run to show: its unification profile
    profiles: list[Profile] = field(default_factory=list)
    #: a trip run: each sample's chain over the cycles (``profiles.ChainItem``); empty otherwise
    chains: list[ChainItem] = field(default_factory=list)


def metric_order(entry: RunEntry) -> list[str]:
    """Metrics then their sub-scores, in the order the results file lists metrics."""
    names = list(entry.data["model_types"])
    subs = sorted(k for k in entry.stats if "." in k)
    return names + [s for s in subs if s not in names]


def gallery_item(sample: SampleView, metrics: Sequence[str], thumbs) -> GalleryItem:
    return GalleryItem(
        sample_id=sample.sample_id,
        reference=thumbs(sample.reference_file),
        reconstruction=thumbs(sample.reconstruction_file),
        caption=None if sample.caption is None else truncate(sample.caption),
        caption_words=word_count(sample.caption),
        seed=sample.seed,
        scores=[(m, fmt(x100(sample.scores.get(m)))) for m in metrics],
    )


def extremes(entry: RunEntry, items: Mapping[str, GalleryItem], metrics: Sequence[str]) -> list[Extremes]:
    """Best and worst samples per metric; ties broken by sample id so pages are stable."""
    out = []
    for metric in metrics:
        scored = [(s.scores.get(metric), s.sample_id) for s in entry.samples]
        scored = [(v, sid) for v, sid in scored if v is not None]
        if not scored:
            continue
        best = sorted(scored, key=lambda t: (-t[0], t[1]))[:BEST_WORST_COUNT]
        worst = sorted(scored, key=lambda t: (t[0], t[1]))[:BEST_WORST_COUNT]
        out.append(
            Extremes(
                metric,
                [(items[sid], fmt(v * 100)) for v, sid in best],
                [(items[sid], fmt(v * 100)) for v, sid in worst],
            )
        )
    return out


def _layout(title: str, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    layout = {
        "title": {"text": plot_text(title)},
        "xaxis": {"title": {"text": plot_text(x_title)}},
        "yaxis": {"title": {"text": plot_text(y_title)}},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "height": 380,
    }
    layout.update(extra)
    return layout


def caption_scatter(entry: RunEntry, metrics: Sequence[str]) -> dict[str, Any] | None:
    """Caption length (words) against each metric's per-sample score (x100)."""
    traces = []
    for metric in metrics:
        xs, ys, ids = [], [], []
        for sample in entry.samples:
            words = word_count(sample.caption)
            value = sample.scores.get(metric)
            if words is None or value is None:
                continue
            xs.append(words)
            ys.append(value * 100)
            ids.append(plot_text(sample.sample_id))
        if xs:
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": plot_text(metric),
                    "x": xs,
                    "y": ys,
                    "customdata": ids,
                    "hovertemplate": "%{customdata}<br>%{x} words, %{y:.2f}<extra></extra>",
                }
            )
    if not traces:
        return None
    return {
        "id": "plot-caption-length",
        "data": traces,
        "layout": _layout("Caption length vs score", "caption length (words)", "score (x100)"),
    }


def attribute_bars(entry: RunEntry) -> dict[str, Any] | None:
    keys = sorted(k for k in entry.stats if k.startswith("shapes-attr."))
    cells = [(k, stat_cell(entry.stats[k])) for k in keys]
    cells = [(k, c) for k, c in cells if c.value is not None]
    if not cells:
        return None
    plus = [0.0 if c.high is None else c.high - c.value for _, c in cells]
    minus = [0.0 if c.low is None else c.value - c.low for _, c in cells]
    trace = {
        "type": "bar",
        "x": [plot_text(k.split(".", 1)[1]) for k, _ in cells],
        "y": [c.value for _, c in cells],
        "error_y": {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus},
        "hovertemplate": "%{x}: %{y:.2f}<extra></extra>",
    }
    layout = _layout(
        "Shapes: per-attribute F1 (x100, 95% CI)",
        "attribute",
        "F1 (x100)",
        yaxis={"range": [0, 100], "title": {"text": "F1 (x100)"}},
    )
    return {"id": "plot-attributes", "data": [trace], "layout": layout}


def training_plots(entry: RunEntry) -> list[dict[str, Any]]:
    curve = entry.curve
    if curve is None or not curve.step:
        return []
    plots = []
    for key, title, axis in (
        ("reward", "Training reward", "reward"),
        ("caption_length", "Caption length during training", "caption length"),
    ):
        values = list(getattr(curve, key))
        if not any(v is not None for v in values):
            continue
        trace = {
            "type": "scatter",
            "mode": "lines",
            "name": axis,
            "x": list(curve.step),
            "y": values,
            "connectgaps": False,
        }
        plots.append({"id": f"plot-training-{key}", "data": [trace], "layout": _layout(title, "step", axis)})
    return plots


# ---- run record pages ------------------------------------------------------------------------


def tree(value: Any, depth: int = 0) -> dict[str, Any]:
    """A JSON value as a display tree of text; deep or long structures are cut, not dropped."""
    if isinstance(value, Mapping):
        if not value:
            return {"kind": "text", "text": "(empty)"}
        if depth >= MAX_TREE_DEPTH:
            return {"kind": "text", "text": truncate(json.dumps(value, sort_keys=True, ensure_ascii=False), 2000)}
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        shown = [(str(k), tree(v, depth + 1)) for k, v in items[:MAX_TREE_ITEMS]]
        return {"kind": "map", "items": shown, "more": max(0, len(items) - MAX_TREE_ITEMS)}
    if isinstance(value, list):
        if depth >= MAX_TREE_DEPTH:
            return {"kind": "text", "text": truncate(json.dumps(value, sort_keys=True, ensure_ascii=False), 2000)}
        if all(not isinstance(v, (Mapping, list)) for v in value):
            text = ", ".join(_scalar(v) for v in value[:MAX_TREE_ITEMS])
            more = len(value) - MAX_TREE_ITEMS
            return {"kind": "text", "text": text + (f" … (+{more} more)" if more > 0 else "") if value else "[]"}
        return {
            "kind": "list",
            "items": [tree(v, depth + 1) for v in value[:MAX_TREE_ITEMS]],
            "more": max(0, len(value) - MAX_TREE_ITEMS),
        }
    return {"kind": "text", "text": _scalar(value)}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return truncate(value)
    return repr(value) if isinstance(value, float) else str(value)
