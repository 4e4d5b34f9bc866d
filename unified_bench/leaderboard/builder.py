"""Build the static leaderboard site: entries -> validated runs -> HTML pages + assets.

The site opens from ``file://`` with no server and no network: CSS, the table script and
plotly's bundled JS are files under ``assets/`` referenced by relative paths, and a Content
Security Policy forbids inline scripts, so markup that slipped into an entry could not run
even if escaping failed. The same inputs give byte-identical output: iteration is sorted,
nothing records the build time, thumbnails are encoded deterministically.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from unified_bench.core.errors import ConfigError
from unified_bench.leaderboard.board import BOARD_FILE, TrackTable, board_text, track_table
from unified_bench.leaderboard.comparison import Difference, metric_differences, sample_signature
from unified_bench.leaderboard.entries import LoadOutcome, Rejection, RunEntry, load_entries
from unified_bench.leaderboard.profiles import (
    TripGroup,
    chain_files,
    chain_item,
    comparison_scores,
    group_runs,
    groups_by_run,
    profile_for,
    text_partner,
)
from unified_bench.leaderboard.thumbnails import Thumbnailer, default_workers
from unified_bench.leaderboard.tracks import TRACKS, Track, check_run, executed_summary, protocol_summary, tracks_for
from unified_bench.leaderboard.views import (
    MISSING,
    ModelPage,
    Row,
    attribute_bars,
    caption_scatter,
    extremes,
    fmt,
    gallery_item,
    metric_order,
    script_json,
    side_by_side,
    slug,
    stat_cell,
    training_plots,
    tree,
    x100,
)

#: present in every site we build; a non-empty --out without it is never deleted
SITE_MARKER = ".unified-bench-site"
ASSETS = ("leaderboard.css", "leaderboard.js")


@dataclass
class BuildResult:
    out: Path
    runs: int
    reported: int
    rejections: list[Rejection]
    notices: list[str]
    files: int
    timings: dict[str, float] = field(default_factory=dict)
    thumbnail_failures: dict[str, str] = field(default_factory=dict)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("unified_bench.leaderboard", "templates"),
        autoescape=True,  # every template, whatever its extension
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.update(fmt=fmt, MISSING=MISSING, x100=x100)
    return env


def check_out_dir(out: Path) -> None:
    """Refuse to replace a directory that is not a site we built (or empty)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / SITE_MARKER).is_file():
        raise ConfigError(
            f"--out {out}: directory is not empty and is not a leaderboard site built here "
            f"(no {SITE_MARKER}); choose an empty or new directory"
        )


def plotly_asset_name() -> str:
    import plotly

    return f"plotly-{plotly.__version__}.min.js"


class _Site:
    """Writes files under a staging directory and counts them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = 0

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        self.files += 1


def build_site(
    runs: Sequence[Path],
    entries: Sequence[Path],
    out: Path,
    *,
    log: Callable[[str], None] | None = None,
    workers: int | None = None,
) -> BuildResult:
    """Build the site into ``out`` (replaced atomically when it is a previous site).

    ``workers`` threads make thumbnails and comparisons (default: 4 per CPU, at most 16);
    the output does not depend on it.
    """
    workers = workers or default_workers()
    out = Path(out)
    check_out_dir(out)
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    loaded = load_entries([Path(p) for p in runs], [Path(p) for p in entries])
    timings["load and validate"] = time.perf_counter() - tick

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        site = _Site(staging)
        thumbs = Thumbnailer(staging, workers)
        _render_all(site, loaded, thumbs, timings, log, workers)
        site.write(SITE_MARKER, "Unified-Bench leaderboard site; rebuilt by `unified-bench leaderboard`.\n")
        tick = time.perf_counter()
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
        timings["replace previous site"] = time.perf_counter() - tick
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildResult(
        out=out,
        runs=len(loaded.runs),
        reported=len(loaded.reported),
        rejections=loaded.rejections,
        notices=loaded.notices,
        files=site.files + len(thumbs.written),
        timings=timings,
        thumbnail_failures=dict(sorted(thumbs.failed.items())),
    )


def _timed(timings: dict[str, float], name: str, start: float) -> None:
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _render_all(
    site: _Site,
    loaded: LoadOutcome,
    thumbs: Thumbnailer,
    timings: dict[str, float],
    log: Callable[[str], None] | None,
    workers: int,
) -> None:
    env = _environment()
    tick = time.perf_counter()
    assets = resources.files("unified_bench.leaderboard").joinpath("assets")
    for name in ASSETS:
        site.write(f"assets/{name}", assets.joinpath(name).read_text(encoding="utf-8"))
    import plotly.offline

    plotly_name = plotly_asset_name()
    site.write(f"assets/{plotly_name}", plotly.offline.get_plotlyjs())
    _timed(timings, "assets", tick)

    runs = sorted(loaded.runs, key=lambda e: (e.model_name, e.run_id))
    pages = {e.run_id: slug(e.model_name, e.run_id) for e in runs}
    on_track: dict[str, list[RunEntry]] = defaultdict(list)
    tracks_of: dict[str, list[Track]] = {}
    for entry in runs:
        tracks_of[entry.run_id] = tracks_for(entry.run, entry.metrics)
        for track in tracks_of[entry.run_id]:
            on_track[track.slug].append(entry)

    # one model's runs on a track, across trips (a text-trip run is no row of its own)
    groups = {track.slug: group_runs(track, on_track[track.slug]) for track in TRACKS}
    profile_groups = groups_by_run([g for gs in groups.values() for g in gs if g.has_profile])

    # comparisons: every pair of image-trip runs on a track measured on the same samples, on the
    # track's columns and, where runs have them, the text trip's and later cycles' scores
    tick = time.perf_counter()
    scores: dict[str, dict[str, dict[str, float | None]]] = {}
    plans = [_compare_plan(track, groups[track.slug], scores) for track in TRACKS]
    diffs = _compute_differences(plans, scores, workers)
    compare_data = {plan.track.slug: _compare_data(plan, pages, diffs) for plan in plans}
    comparable = {plan.track.slug: {e.run_id for e in plan.members} for plan in plans}
    _timed(timings, "comparisons", tick)

    nav = [(t.slug, t.title) for t in TRACKS]

    def render(
        template: str,
        rel: str,
        root: str,
        title: str,
        data: dict[str, Any] | None = None,
        plotly: bool = False,
        **ctx: Any,
    ) -> None:
        started = time.perf_counter()
        html = env.get_template(template).render(
            root=root,
            title=title,
            nav=nav,
            page_json=script_json(data or {}),
            plotly=plotly_name if plotly else None,
            **ctx,
        )
        site.write(rel, html)
        _timed(timings, "render", started)

    # track tables
    tables: dict[str, TrackTable] = {}
    track_rows: dict[str, list[Row]] = {}
    for track in TRACKS:
        tables[track.slug] = track_table(track, on_track[track.slug], loaded.reported, pages, "../")
        track_rows[track.slug] = tables[track.slug].rows
        render(
            "track.html.jinja",
            f"tracks/{track.slug}.html",
            "../",
            track.title,
            track=track,
            rows=track_rows[track.slug],
            resolution=tables[track.slug].resolution,
            shared_ranks=tables[track.slug].shared_ranks,
            trip_columns=tables[track.slug].trip_columns,
            text_only=tables[track.slug].text_only,
            protocol_tree=tree(track.protocol()),
            protocol_text=protocol_summary(track.protocol()),
            comparable=len(compare_data[track.slug]["runs"]),
        )
        render(
            "compare.html.jinja",
            f"compare/{track.slug}.html",
            "../",
            f"Compare · {track.title}",
            data={"compare": compare_data[track.slug]},
            track=track,
            comparable=len(compare_data[track.slug]["runs"]),
        )

    site.write(BOARD_FILE, board_text(tables))

    # model and run-record pages
    tick = time.perf_counter()
    thumbs.prepare(f for e in runs for s in e.samples for f in (s.reference_file, s.reconstruction_file))
    thumbs.prepare(f for e in runs for f in chain_files(e))
    _timed(timings, "thumbnails", tick)
    for index, entry in enumerate(runs):
        page = pages[entry.run_id]
        tick = time.perf_counter()
        metrics = metric_order(entry)
        items = {s.sample_id: gallery_item(s, metrics, thumbs) for s in entry.samples}
        main = [m for m in metrics if "." not in m]
        chains = [chain_item(entry, s, thumbs, main) for s in entry.samples] if entry.trip else []
        _timed(timings, "thumbnails", tick)
        plots = [p for p in (attribute_bars(entry), caption_scatter(entry, metrics)) if p is not None]
        plots += training_plots(entry)
        model = ModelPage(
            entry=entry,
            page=page,
            tracks=tracks_of[entry.run_id],
            stat_rows=[(m, stat_cell(entry.stats.get(m))) for m in metrics],
            gallery=[items[s.sample_id] for s in entry.samples],
            extremes=extremes(entry, items, metrics),
            plots=plots,
            compare_links=[
                (track.slug, track.title) for track in tracks_of[entry.run_id] if entry.run_id in comparable[track.slug]
            ],
            model_tree=tree(entry.run["model"]) if entry.run.get("model") is not None else None,
            protocol_checks=[(track, check_run(entry.record, track)) for track in tracks_of[entry.run_id]],
            verifications=[
                (track, row.status, list(row.reasons))
                for track in tracks_of[entry.run_id]
                for row in track_rows[track.slug]
                if row.run_id == entry.run_id
            ],
            executed_text=executed_summary(entry.run.get("protocol_executed")),
            published=side_by_side(entry, loaded.reported, tracks_of[entry.run_id]),
            profiles=[profile_for(group, entry, pages) for group in profile_groups.get(entry.run_id, [])],
            chains=chains,
        )
        render(
            "model.html.jinja",
            f"models/{page}.html",
            "../",
            entry.model_name,
            data={"plots": plots},
            plotly=bool(plots),
            m=model,
            run_id=entry.run_id,
        )
        render(
            "run.html.jinja",
            f"runs/{page}.html",
            "../",
            f"Run record · {entry.model_name}",
            entry=entry,
            page=page,
            record=_record_sections(entry),
            errors=entry.data["errors"][:500],
            more_errors=max(0, len(entry.data["errors"]) - 500),
        )
        if log is not None and (index + 1) % 10 == 0:
            log(f"rendered {index + 1}/{len(runs)} runs")

    off_track = [e for e in runs if not tracks_of[e.run_id]]
    render(
        "index.html.jinja",
        "index.html",
        "",
        "Leaderboard",
        tracks=[(t, track_rows[t.slug]) for t in TRACKS],
        off_track=[(e, pages[e.run_id]) for e in off_track],
        rejections=sorted(loaded.rejections, key=lambda r: (r.source, r.message)),
        notices=sorted(loaded.notices),
        runs_count=len(runs),
        reported_count=len(loaded.reported),
        thumbnail_failures=len(thumbs.failed),
    )


@dataclass
class _ComparePlan:
    """The runs of one track that share a sample set with another run, and their pairs."""

    track: Track
    metrics: list[str]
    members: list[RunEntry]
    group_of: dict[str, int]
    pairs: list[tuple[RunEntry, RunEntry]]  # (lower index, higher index)


def _compare_plan(track: Track, groups: list[TripGroup], scores: dict[str, dict[str, dict[str, float | None]]]) -> _ComparePlan:
    """The pairs of image-trip runs on the same samples. Each run's per-sample scores, with the
    trip keys (``profiles.comparison_scores``) merged in, go into ``scores`` by run id."""
    groups_of: dict[tuple, list[RunEntry]] = defaultdict(list)
    extra: list[str] = []
    for group in groups:
        for entry in group.image:
            signature = sample_signature(entry)
            if signature is not None:
                groups_of[signature].append(entry)
            more, keys = comparison_scores(entry, text_partner(entry, group), track)
            base = scores.setdefault(entry.run_id, {s.sample_id: dict(s.scores) for s in entry.samples})
            for sid, values in more.items():
                base[sid].update(values)
            extra += [k for k in keys if k not in extra and any(v.get(k) is not None for v in more.values())]
    members: list[RunEntry] = []
    group_of: dict[str, int] = {}
    for number, signature in enumerate(sorted(groups_of, key=lambda s: (len(s), s))):
        group = groups_of[signature]
        if len(group) < 2:
            continue
        for entry in group:
            group_of[entry.run_id] = number
            members.append(entry)
    members.sort(key=lambda e: (e.model_name, e.run_id))
    pairs = [(a, b) for a, b in itertools.combinations(members, 2) if group_of[a.run_id] == group_of[b.run_id]]
    member_ids = {e.run_id for e in members}
    extra = [k for k in extra if any(k in scores[rid][sid] for rid in member_ids for sid in scores[rid])]
    return _ComparePlan(track, list(track.metrics) + list(track.sub_scores) + _ordered(extra), members, group_of, pairs)


def _ordered(keys: list[str]) -> list[str]:
    """Trip keys in reading order: each image-trip cycle, then the text trip and its cycles."""

    def key(name: str) -> tuple:
        head, _, metric = name.partition(": ")
        text = head.startswith("text trip")
        cycle = int(head.rsplit(" ", 1)[1]) if head.rsplit(" ", 1)[1].isdigit() else 1
        return (text, cycle, keys.index(name))

    return sorted(keys, key=key)


def _compute_differences(
    plans: Sequence[_ComparePlan], scores: dict[str, dict[str, dict[str, float | None]]], workers: int
) -> dict[tuple[str, str, str], Difference]:
    """Every paired difference the compare pages need, each computed once, in parallel."""
    wanted: dict[tuple[str, str], tuple[RunEntry, RunEntry, list[str]]] = {}
    for plan in plans:
        for a, b in plan.pairs:
            _, _, metrics = wanted.setdefault((a.run_id, b.run_id), (a, b, []))
            metrics.extend(m for m in plan.metrics if m not in metrics)
    tasks = [wanted[key] for key in sorted(wanted)]

    def differences(a: RunEntry, b: RunEntry, metrics: list[str]) -> list[Difference]:
        ids = [s.sample_id for s in a.samples]
        return metric_differences(ids, scores[a.run_id], scores[b.run_id], metrics)

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda task: differences(*task), tasks))
    out: dict[tuple[str, str, str], Difference] = {}
    for (a, b, _), diffs in zip(tasks, results, strict=True):
        for diff in diffs:
            out[(a.run_id, b.run_id, diff.metric)] = diff
    return out


def _compare_data(
    plan: _ComparePlan, pages: dict[str, str], diffs: dict[tuple[str, str, str], Difference]
) -> dict[str, Any]:
    """JSON for a track's compare page: the runs and, per pair, (mean, low, high, n) per metric."""
    index = {e.run_id: i for i, e in enumerate(plan.members)}
    pairs: dict[str, list[list[float | int | None]]] = {}
    for a, b in plan.pairs:
        row = []
        for metric in plan.metrics:
            diff = diffs[(a.run_id, b.run_id, metric)]
            row.append([x100(diff.mean), x100(diff.low), x100(diff.high), diff.n])
        pairs[f"{index[a.run_id]}-{index[b.run_id]}"] = row
    return {
        "metrics": plan.metrics,
        "runs": [
            {"label": f"{e.model_name} ({e.run_id[:12]})", "page": pages[e.run_id], "group": plan.group_of[e.run_id]}
            for e in plan.members
        ],
        "pairs": pairs,
    }


def _record_sections(entry: RunEntry) -> list[tuple[str, dict[str, Any]]]:
    """The run record grouped for reading; everything in ``run`` appears somewhere."""
    run = entry.run
    order = [
        ("Model and adapter arguments", "model"),
        ("Protocol requested", "protocol"),
        ("Protocol as executed (reported by the adapter)", "protocol_executed"),
        ("Dataset", "dataset"),
        ("Seeds", "seeds"),
        ("Metric checkpoints and revisions", "metrics"),
        ("Package versions", "package_versions"),
        ("Hardware", "hardware"),
        ("Timings (s)", "timings"),
        ("Training", "training"),
    ]
    shown = {"run_id", "created", "command", "git_commit", "device"}
    sections = []
    for title, key in order:
        shown.add(key)
        if key in run:
            sections.append((title, tree(run[key])))
    rest = {k: v for k, v in run.items() if k not in shown}
    if rest:
        sections.append(("Other fields", tree(rest)))
    if entry.data.get("unmatched"):
        sections.append(("Unmatched files", tree(entry.data["unmatched"])))
    return sections
