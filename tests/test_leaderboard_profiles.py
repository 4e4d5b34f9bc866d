"""The leaderboard's unification profile (issue 17): a model's runs grouped across trips, the
text-trip and drift columns, the cycle curves and each sample's chain, on real runs of the
runner (the Shapes oracle, long and short captions, both trips, three cycles)."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from pathlib import Path

import pytest
from leaderboard_runs import PAYLOAD_CAPTION, PRUNED_SAMPLE, make_trip_runs, make_world

from unified_bench.leaderboard import build_site
from unified_bench.leaderboard.board import all_track_tables, render_table, track_json
from unified_bench.leaderboard.entries import load_entries
from unified_bench.leaderboard.profiles import (
    _band,
    _line,
    chain_item,
    cycle_plot,
    drift,
    group_runs,
    model_identity,
    nice_ticks,
    score_at,
    text_partner,
)
from unified_bench.leaderboard.tracks import get_track
from unified_bench.leaderboard.views import slug

SHAPES = get_track("shapes")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb-trips")
    runs = make_trip_runs(root / "runs")
    loaded = load_entries([root / "runs"])
    assert not loaded.rejections and len(loaded.runs) == 4
    entries = {next(k for k, p in runs.items() if p == e.run_dir): e for e in loaded.runs}
    site = root / "site"
    build_site([root / "runs"], [], site)
    return {"runs": runs, "loaded": loaded, "entries": entries, "site": site}


def results(world, key: str) -> dict:
    return json.loads((world["runs"][key] / "results.json").read_text(encoding="utf-8"))


def page_text(path: Path) -> str:
    text = re.sub(r"<script.*?</script>", "", path.read_text(encoding="utf-8"), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


# ---- grouping and the numbers ------------------------------------------------------------------


def test_runs_group_across_trips_by_model_name_and_args(world):
    e = world["entries"]
    assert {k: (v.trip, len(v.cycles)) for k, v in e.items()} == {
        "long-image": ("image", 3), "long-text": ("text", 3), "short-image": ("image", 3), "short-text": ("text", 3)}
    # the same adapter with other arguments is another model; the display label plays no part
    assert model_identity(e["long-image"]) == model_identity(e["long-text"]) == ("shapes-oracle", "{}")
    assert model_identity(e["short-image"]) == ("shapes-oracle", '{"detail": "short"}') == model_identity(e["short-text"])
    groups = group_runs(SHAPES, list(e.values()))
    by_args = {g.identity[1]: g for g in groups}
    assert {args: ([r.run_id for r in g.image], [r.run_id for r in g.text]) for args, g in by_args.items()} == {
        "{}": ([e["long-image"].run_id], [e["long-text"].run_id]),
        '{"detail": "short"}': ([e["short-image"].run_id], [e["short-text"].run_id])}
    assert all(g.has_profile for g in groups)
    assert text_partner(e["short-image"], by_args['{"detail": "short"}']) is e["short-text"]
    assert text_partner(e["long-image"], by_args["{}"]) is e["long-text"]


def test_track_table_has_the_trip_columns_and_no_text_trip_rows(world):
    e = world["entries"]
    table = all_track_tables(world["loaded"])["shapes"]
    assert table.trip_columns and table.text_only == []
    assert sorted(r.run_id for r in table.rows) == sorted([e["long-image"].run_id, e["short-image"].run_id])
    rows = {r.run_id: r for r in table.rows}
    long_row, short_row = rows[e["long-image"].run_id], rows[e["short-image"].run_id]
    # the text trip's score is the text-trip run's shapes-attr (its final caption against the prompt)
    text = results(world, "long-text")["statistics_by_model"]["shapes-attr"]["average_similarity"]
    assert long_row.trips.text.value == pytest.approx(100 * text) and long_row.trips.text_page.endswith(
        f"{slug(e['long-text'].model_name, e['long-text'].run_id)}.html")
    assert long_row.trips.text.value == pytest.approx(100.0) and short_row.trips.text.value == pytest.approx(0.0)
    # each trip's drift is the drop of the track score from cycle 1 to cycle 3, as the runner's curves
    for row, image, text_key in ((long_row, "long-image", "long-text"), (short_row, "short-image", "short-text")):
        for cell, key in ((row.trips.image_drift, image), (row.trips.text_drift, text_key)):
            curve = results(world, key)["cycle_curves"]["shapes-attr"]
            ci = curve["drop_paired_ci95"]
            assert (cell.value, cell.low, cell.high, cell.n) == pytest.approx((100 * ci["mean"], 100 * ci["low"], 100 * ci["high"], ci["n"]))
            assert cell.value == pytest.approx(100 * curve["drop"])
        assert row.trips.image_cycles == row.trips.text_cycles == 3
    # ranks and the existing columns do not change: the text-trip runs are nowhere else
    assert [c.key for c in SHAPES.columns] == ["effnet", "shapes-attr", *SHAPES.sub_scores]
    board = track_json(table)
    assert all(set(row["trips"]) == {"text_trip", "text_cycles", "image_drift", "image_cycles", "text_drift"} for row in board["rows"])
    md = render_table(table, "md")
    assert "text trip shapes-attr F1" in md and "image drift CI" in md and "text drift" in md


def test_a_default_run_gets_no_trip_columns_or_profile(tmp_path):
    world = make_world(tmp_path)
    loaded = load_entries([world["runs"]])
    for slug_, table in all_track_tables(loaded).items():
        assert not table.trip_columns, slug_
        assert all("trips" not in row for row in track_json(table)["rows"])
        assert "drift" not in render_table(table, "csv")
    for page in (world["site"] / "models").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "Unification profile" not in text and "<svg" not in text and "chain-gallery" not in text
    assert "text trip" not in (world["site"] / "tracks" / "shapes.html").read_text(encoding="utf-8")


def test_drift_of_one_metric_and_of_a_composite(world):
    """Any track score: one metric's drop is the runner's paired drop; a composite's (mean of
    means) drop is the mean of its metrics' drops, with a CI from a joint paired bootstrap."""
    entry = world["entries"]["short-text"]
    curves = results(world, "short-text")["cycle_curves"]
    ssim = dataclasses.replace(SHAPES, metrics=("ssim",), score_metric="ssim")
    cell = drift(entry, ssim)
    ci = curves["ssim"]["drop_paired_ci95"]
    assert cell.value != 0 and (cell.value, cell.low, cell.high) == pytest.approx((100 * ci["mean"], 100 * ci["low"], 100 * ci["high"]))
    composite = dataclasses.replace(SHAPES, metrics=("shapes-attr", "ssim"), score_key="composite", score_metric=None)
    joint = drift(entry, composite)
    assert joint.value == pytest.approx(50 * (curves["ssim"]["drop"] + curves["shapes-attr"]["drop"]))
    assert joint.low <= joint.value <= joint.high and joint.n == 6
    # the score at each cycle, one metric and composite
    by_cycle = curves["ssim"]["by_cycle"]
    assert [score_at(entry, ssim, k).value for k in range(3)] == pytest.approx([100 * v for v in by_cycle])
    assert score_at(entry, composite, 2).value == pytest.approx(50 * (by_cycle[2] + curves["shapes-attr"]["by_cycle"][2]))
    assert score_at(entry, ssim, 3).value is None
    assert drift(world["entries"]["short-image"], ssim).value == pytest.approx(100 * results(world, "short-image")["cycle_curves"]["ssim"]["drop"])


# ---- the curves ---------------------------------------------------------------------------------


def test_cycle_plot_points_axes_and_text(world):
    entry = world["entries"]["short-text"]
    data = results(world, "short-text")
    plot = cycle_plot(entry, "ssim", "p")
    assert [p.cycle for p in plot.points] == [1, 2, 3]
    for point, cycle in zip(plot.points, data["cycles"], strict=True):
        ci = cycle["confidence_intervals"]["ssim"]
        assert (point.original.value, point.original.low, point.original.high) == pytest.approx(
            (100 * ci["mean"], 100 * ci["low"], 100 * ci["high"]))
        if cycle["vs_previous"] is None:
            assert point.previous is None
        else:
            assert point.previous.value == pytest.approx(100 * cycle["vs_previous"]["statistics_by_model"]["ssim"]["average_similarity"])
    original, previous = plot.series
    assert (original.key, previous.key) == ("original", "previous")
    assert len(original.markers) == 3 and len(previous.markers) == 2  # cycle 1 has no previous
    # y grows downwards in SVG: a higher mean sits higher; every mark is inside the plot area
    top, bottom = plot.margin["top"], plot.plot_bottom
    values = [p.original.value for p in plot.points]
    ys = [y for _, y, _ in original.markers]
    assert all(top <= y <= bottom for _, y, _ in original.markers + previous.markers)
    assert sorted(range(3), key=lambda i: values[i]) == sorted(range(3), key=lambda i: -ys[i])
    ticks = [float(label) for _, label in plot.y_ticks]
    assert ticks[0] <= min(p.original.low for p in plot.points) and ticks[-1] >= max(p.original.high for p in plot.points)
    assert [label for _, label in plot.x_ticks] == ["1", "2", "3"]
    assert plot.title == "ssim over 3 cycles, text trip"
    assert f"cycle 1 {plot.points[0].original.text}" in plot.description and "previous cycle (dashed)" in plot.description


def test_nice_ticks_lines_and_bands():
    assert nice_ticks(0, 100) == [0, 25, 50, 75, 100]
    assert nice_ticks(90.2, 94.9) == [90, 92, 94, 96]  # the ends are covered
    assert nice_ticks(87.7, 96.5) == [87.5, 90, 92.5, 95, 97.5]
    flat = nice_ticks(100, 100)
    assert flat[0] <= 99 and flat[-1] >= 101 and len(flat) >= 2
    with pytest.raises(ValueError):
        nice_ticks(float("nan"), 1)
    assert _line([(1, 2), None, (3, 4), (5, 6)]) == "M1,2 M3,4 L5,6"  # a missing mean breaks the line
    assert _line([]) == "" and _band([]) == ""
    assert _band([(0, 10, 5), (10, 12, 4)]) == "M0,5 L10,4 L10,12 L0,10 Z"


# ---- the chain ----------------------------------------------------------------------------------


class _Thumbs:
    def __call__(self, path):
        return None if path is None else f"thumbs/{path.parent.parent.name}/{path.name}"


def test_chains_follow_each_trip_and_mark_pruned_images(world):
    image_run, text_run = world["entries"]["long-image"], world["entries"]["long-text"]
    sample = next(s for s in image_run.samples if s.sample_id == PRUNED_SAMPLE)
    assert [(step.cycle, step.recorded, step.image is None) for step in sample.chain] == [(1, True, False), (2, True, False), (3, True, True)]
    item = chain_item(image_run, sample, _Thumbs(), ["shapes-attr"])
    assert [c.label for c in item.cells] == ["original", "cycle 1 caption", "cycle 1 image", "cycle 2 caption", "cycle 2 image",
                                            "cycle 3 caption", "cycle 3 image"]
    assert [c.state for c in item.cells] == [""] * 6 + ["not kept"]
    assert item.cells[1].text == json.loads((world["runs"]["long-image"] / "captions.jsonl").read_text().splitlines()[1])["caption"]
    assert item.scores == [("shapes-attr", ["100.00", "100.00", "100.00"])]
    first = text_run.samples[0]
    item = chain_item(text_run, first, _Thumbs(), [])
    assert [c.kind for c in item.cells] == ["text", "image", "text", "image", "text", "image", "text"]
    prompt = json.loads((world["runs"]["long-text"] / "captions.jsonl").read_text().splitlines()[0])["prompt"]
    assert item.cells[0].label == "prompt" and item.cells[0].text == prompt
    assert item.cells[2].label == "cycle 1 caption" and item.cells[2].text == first.chain[1].prompt  # cycle 2 draws it
    # a cycle with no line for the sample: not produced, not "not kept"
    broken = dataclasses.replace(first, chain=[first.chain[0], dataclasses.replace(first.chain[1], recorded=False, caption=None, image=None)])
    cells = chain_item(text_run, broken, _Thumbs(), []).cells
    assert [c.state for c in cells[3:]] == ["not produced", "not produced"]


def test_site_shows_profile_plots_chains_and_escapes_captions(world):
    e, site = world["entries"], world["site"]
    short_page = site / "models" / f"{slug(e['short-text'].model_name, e['short-text'].run_id)}.html"
    raw = short_page.read_text(encoding="utf-8")
    assert "<img src=x" not in raw and "&lt;img src=x onerror=" in raw  # the payload caption stays text
    text = page_text(short_page)
    assert PAYLOAD_CAPTION in text and "This is a text-trip run" in text
    assert raw.count("<svg") == 4  # ssim and shapes-attr, on each trip
    assert 'role="img"' in raw and "<title id=" in raw and "<desc id=" in raw
    long_page = site / "models" / f"{slug(e['long-image'].model_name, e['long-image'].run_id)}.html"
    long_text = page_text(long_page)
    assert "Unification profile" in long_text and "image not kept" in long_text
    assert "shapes-attr over 3 cycles, image trip" in long_text and "shapes-attr over 3 cycles, text trip" in long_text
    track = page_text(site / "tracks" / "shapes.html")
    assert "text trip shapes-attr F1" in track and "image drift" in track and "cycles 1→3" in track
    # the compare page pairs the text trip's and the later cycles' per-sample scores
    data = json.loads(re.search(r'id="page-data">(.*?)</script>', (site / "compare" / "shapes.html").read_text(), re.S).group(1))
    metrics = data["compare"]["metrics"]
    assert metrics == [*SHAPES.metrics, *SHAPES.sub_scores, "cycle 2: shapes-attr", "cycle 3: shapes-attr",
                       "text trip: shapes-attr", "text trip cycle 2: shapes-attr", "text trip cycle 3: shapes-attr"]
    (pair,) = data["compare"]["pairs"].values()
    by_metric = dict(zip(metrics, pair, strict=True))
    assert abs(by_metric["text trip: shapes-attr"][0]) == pytest.approx(100.0) and by_metric["text trip: shapes-attr"][3] == 6
    assert abs(by_metric["cycle 3: shapes-attr"][0]) == pytest.approx(100.0)


def test_a_crafted_cycle_mean_is_rejected(world, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(world["runs"]["short-image"], run)
    data = json.loads((run / "results.json").read_text())
    data["cycles"][2]["statistics_by_model"]["ssim"]["average_similarity"] = 0.99
    (run / "results.json").write_text(json.dumps(data))
    loaded = load_entries([run])
    assert not loaded.runs and "cycles/2/statistics_by_model/ssim/average_similarity" in loaded.rejections[0].message
