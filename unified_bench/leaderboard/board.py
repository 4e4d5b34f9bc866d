"""The board as data: per track, the rows in table order with their verification status, rank
and scores, and what the track's sample set resolves. The site's track tables,
``leaderboard.json`` and ``unified-bench table`` all come from :func:`track_table`, so they
cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unified_bench.leaderboard.entries import LoadOutcome, ReportedEntry, RunEntry, load_entries
from unified_bench.leaderboard.profiles import group_runs, model_identity, text_partner, trip_numbers
from unified_bench.leaderboard.ranking import TrackResolution, rank_runs
from unified_bench.leaderboard.tracks import TRACKS, Track, get_track, tracks_for
from unified_bench.leaderboard.verification import VERIFIED, fingerprint_conflicts, verify_run
from unified_bench.leaderboard.views import Row, ValueCell, reported_row, run_row, slug, sort_rows

BOARD_FILE = "leaderboard.json"
#: 2: ranks are shared by rows the set cannot separate; rank_upper, rank_note and each track's
#: resolution were added
BOARD_VERSION = 2
TABLE_FORMATS = ("md", "csv", "latex", "json")


@dataclass
class TrackTable:
    """One track's rows in table order and what its sample set resolves."""

    track: Track
    rows: list[Row]
    resolution: TrackResolution
    #: some row has a text-trip score or a drift: the table shows those columns
    trip_columns: bool = False
    #: (label, model page) of text-trip runs with no image-trip run of their model on the track
    text_only: list[tuple[str, str]] = field(default_factory=list)

    @property
    def shared_ranks(self) -> set[int]:
        """Ranks held by more than one row."""
        ranks = [row.rank for row in self.rows if row.rank is not None]
        return {rank for rank in ranks if ranks.count(rank) > 1}


def track_table(
    track: Track,
    runs: Sequence[RunEntry],
    reported: Sequence[ReportedEntry],
    pages: Mapping[str, str],
    root: str = "../",
) -> TrackTable:
    """The rows of one track, verified, ranked (``leaderboard.ranking``) and sorted (``views.sort_rows``).

    Rows are image-trip runs; a text-trip run's numbers join its model's image-trip row
    (``leaderboard.profiles``), and one with no such row is listed in ``text_only``."""
    groups = {group.identity: group for group in group_runs(track, runs)}
    text_only = [
        (e.model_name, f"{root}models/{pages[e.run_id]}.html")
        for group in groups.values()
        if not group.image
        for e in group.text
    ]
    runs = [e for e in runs if e.trip_name != "text"]
    checks = {e.run_id: verify_run(e.record, track, errors=len(e.data["errors"])) for e in runs}
    flags = fingerprint_conflicts({rid: v.fingerprint for rid, v in checks.items()}, track)
    rows = []
    for entry in runs:
        row = run_row(entry, track, pages, root, checks[entry.run_id])
        partner = text_partner(entry, groups[model_identity(entry)])
        page = f"{root}models/{pages[partner.run_id]}.html" if partner is not None else None
        numbers = trip_numbers(entry, partner, track, page)
        row.trips = numbers if numbers.any else None
        if entry.run_id in flags:
            row.reasons.append(flags[entry.run_id])
        rows.append(row)
    rankable = {row.run_id for row in rows if row.status == VERIFIED and row.score.value is not None}
    ranks, resolution = rank_runs(track, [e for e in runs if e.run_id in rankable])
    for row in rows:
        if row.run_id in ranks:
            place = ranks[row.run_id]
            row.rank, row.rank_upper, row.rank_note = place.rank, place.upper, place.note
        elif row.status == VERIFIED:
            row.rank_note = "not ranked: no track score"
    reported_rows = [reported_row(r, track) for r in reported if r.track == track.slug]
    for rep in reported_rows:  # the runs here whose preset targets the published row
        rep.reproductions = [(row.model, row.model_page) for row in rows if rep.entry_id in row.targets and row.model_page]
    rows += reported_rows
    trip_columns = any(row.trips is not None for row in rows)
    return TrackTable(track, sort_rows(rows), resolution, trip_columns, text_only)


def pages_for(runs: Sequence[RunEntry]) -> dict[str, str]:
    return {e.run_id: slug(e.model_name, e.run_id) for e in runs}


def all_track_tables(loaded: LoadOutcome) -> dict[str, TrackTable]:
    runs = sorted(loaded.runs, key=lambda e: (e.model_name, e.run_id))
    pages = pages_for(runs)
    out = {}
    for track in TRACKS:
        members = [e for e in runs if track in tracks_for(e.run, e.metrics)]
        out[track.slug] = track_table(track, members, loaded.reported, pages)
    return out


def _cell(cell: ValueCell) -> dict[str, Any]:
    return {"value": cell.value, "ci95_low": cell.low, "ci95_high": cell.high, "n": cell.n}


def row_json(row: Row, track: Track, trips: bool = False) -> dict[str, Any]:
    """One row; ``trips`` (the track has trip columns) adds ``trips``: the text trip's score and
    the drifts, null for a row without them."""
    out = {
        "rank": row.rank,
        "rank_lower": row.rank,
        "rank_upper": row.rank_upper,
        "rank_note": row.rank_note,
        "status": row.status,
        "reasons": list(row.reasons),
        "model": row.model_id or row.model,
        "label": row.model,
        "provenance": row.kind,
        "run_id": row.run_id,
        "score": _cell(row.score),
        "metrics": {col.key: _cell(cell) for col, cell in zip(track.columns, row.cells, strict=True)},
        "protocol": {"status": row.protocol_status, "notes": list(row.protocol_notes)},
        "samples": row.samples,
        "errors": row.errors,
        "dataset_fingerprint": row.fingerprint,
        "citation": row.citation,
        "url": row.url,
        "where": row.where,
        "entry_id": row.entry_id,
        "targets": list(row.targets),
    }
    if trips:
        out["trips"] = row.trips.to_json() if row.trips is not None else None
    return out


def track_json(table: TrackTable) -> dict[str, Any]:
    track, rows = table.track, table.rows
    return {
        "slug": track.slug,
        "title": track.title,
        "score": track.score_label,
        "scale": 100,
        "pinned": {
            "dataset_fingerprint": track.pinned_fingerprint(),
            "samples": track.pinned_size(),
            "weights": {m: _pin_json(track, m) for m in track.metrics},
        },
        "resolution": table.resolution.to_dict(),
        "rows": [row_json(r, track, table.trip_columns) for r in rows],
    }


def _pin_json(track: Track, metric: str) -> dict[str, Any]:
    pin = track.weights_pin(metric)
    return {"checkpoint": pin.checkpoint, "revision": pin.revision, "sha256": list(pin.sha256)}


def board_json(tables: Mapping[str, TrackTable]) -> dict[str, Any]:
    return {
        "board_version": BOARD_VERSION,
        "note": "Scores x100 with 95% bootstrap CIs. Only verified rows are ranked: rank (= rank_lower) "
        "is 1 + the rows significantly better (paired bootstrap over the shared samples, Holm's "
        "correction over each row's comparisons), so rows the set cannot separate share it; rank_upper "
        "is the ranked rows minus those significantly worse. Reported and unverified rows have rank "
        "null and say why in 'reasons' and 'rank_note'. Each track's 'resolution' is the difference "
        "its set resolves at the stated power (docs/statistics.md).",
        "tracks": [track_json(tables[t.slug]) for t in TRACKS if t.slug in tables],
    }


def board_text(tables: Mapping[str, TrackTable]) -> str:
    return json.dumps(board_json(tables), indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False) + "\n"


# ---- tables for papers and READMEs -----------------------------------------------------------


def board_frame(track: Track, rows: Sequence[Row], trips: bool = False):
    """The track table as a pandas DataFrame: one row per board row, numbers x100 rounded to 2;
    ``rank range`` is "2-4" where a row could take several ranks."""
    import pandas as pd

    def num(value: float | None) -> float | None:
        return None if value is None else round(value, 2)

    def ci(cell: ValueCell) -> str:
        return "" if cell.low is None or cell.high is None else f"[{cell.low:.2f}, {cell.high:.2f}]"

    records = []
    for row in rows:
        rec: dict[str, Any] = {
            "rank": row.rank,
            "rank range": row.rank_text,
            "model": row.model,
            "status": row.status,
            track.score_label: num(row.score.value),
            f"{track.score_label} CI": ci(row.score),
        }
        for col, cell in zip(track.columns, row.cells, strict=True):
            rec[col.label] = num(cell.value)
            rec[f"{col.label} CI"] = ci(cell)
        if trips:
            for label, cell in trip_cells(track, row):
                rec[label] = num(cell.value)
                rec[f"{label} CI"] = ci(cell)
        rec["reasons"] = "; ".join(row.reasons + ([row.rank_note] if row.rank_note else []))
        records.append(rec)
    frame = pd.DataFrame.from_records(records)
    if not records:
        return frame
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def trip_cells(track: Track, row: Row) -> list[tuple[str, ValueCell]]:
    """The trip columns of a row, labelled as the tables print them (missing without trips)."""
    trips = row.trips
    none = ValueCell(None)
    return [
        (f"text trip {track.score_label}", trips.text if trips else none),
        ("image drift", trips.image_drift if trips else none),
        ("text drift", trips.text_drift if trips else none),
    ]


def markdown(frame) -> str:
    """``DataFrame.to_markdown`` (needs the optional ``tabulate``); without it, a pipe table
    from pandas' CSV writer with ``|`` as the separator."""
    try:
        return frame.to_markdown(index=False) + "\n"
    except ImportError:
        pass
    import csv

    clean = frame.astype(object).where(frame.notna(), "").map(lambda v: " ".join(str(v).split()))
    body = clean.to_csv(sep="|", index=False, quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="|\n")
    lines = ["|" + line for line in body.splitlines()]
    lines.insert(1, "|" + "|".join("---" for _ in frame.columns) + "|")
    return "\n".join(lines) + "\n"


def render_table(table: TrackTable, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(track_json(table), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    frame = board_frame(table.track, table.rows, table.trip_columns)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "latex":
        return frame.to_latex(index=False, na_rep="--", float_format="%.2f", escape=True)
    if fmt == "md":
        return markdown(frame)
    raise ValueError(f"unknown table format {fmt!r}; one of {', '.join(TABLE_FORMATS)}")


def table(runs: Sequence[Path], entries: Sequence[Path], track_slug: str, fmt: str) -> tuple[str, LoadOutcome]:
    """``unified-bench table``: load the entries, build the track's rows, render them."""
    track = get_track(track_slug)
    loaded = load_entries([Path(p) for p in runs], [Path(p) for p in entries])
    return render_table(all_track_tables(loaded)[track.slug], fmt), loaded
