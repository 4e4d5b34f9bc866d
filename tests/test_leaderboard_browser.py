"""The built site in real headless Chromium, opened from file:// (no server, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cdp_browser import Chromium, chromium_path
from leaderboard_runs import PAYLOAD_CAPTION, PAYLOAD_NAME, PRUNED_SAMPLE, RECORD_ENTRIES, make_record_world, make_trip_runs, make_world

from unified_bench.leaderboard.views import slug

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="headless chromium not installed (Debian package 'chromium'; `make system-deps`)",
    ),
]

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("lb-browser"))["site"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with Chromium(tmp_path_factory.mktemp("chromium-profile")) as browser:
        yield browser.page()


def open_page(page, path: Path) -> None:
    page.problems.clear()
    page.goto(path.as_uri())
    assert page.evaluate("document.documentElement.getAttribute('data-ready')") == "1", "leaderboard.js did not run"


def column_values(page, column: int) -> list[str]:
    return page.evaluate(
        "Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.cells[%d].getAttribute('data-sort'))"
        % column
    )


def test_every_page_loads_without_console_errors(page, site):
    pages = sorted(p for p in site.rglob("*.html"))
    assert len(pages) >= 10
    for path in pages:
        open_page(page, path)
        if path.parent.name == "models":
            page.drain(0.5)  # plots render after load
        assert page.problems == [], (path.relative_to(site), page.problems)


def test_clicking_a_header_sorts_the_table(page, site):
    # columns: rank, model, provenance, score, clip, ...; a sort stays within the sections
    # (verified and ranked, reported, unverified): here UAE (reported) then the unverified runs
    open_page(page, site / "tracks" / "unified-bench.html")
    before = column_values(page, 1)
    assert before[0] == "UAE" and before[-1] == "mu"  # default: best score first
    page.click("#board thead th:nth-child(2) button")  # Model: A-Z
    names = column_values(page, 1)
    assert names == ["UAE"] + sorted(before[1:], key=str.lower) and names != before
    assert (
        page.evaluate("document.querySelector('#board thead th:nth-child(2)').getAttribute('aria-sort')") == "ascending"
    )
    page.click("#board thead th:nth-child(5) button")  # clip: high to low, missing last
    clip = column_values(page, 4)
    assert clip[0] == ""  # UAE (reported, no clip score) keeps its section above the unverified rows
    present = [float(v) for v in clip[1:] if v]
    assert present == sorted(present, reverse=True)
    page.click("#board thead th:nth-child(5) button")  # again: low to high, missing still last
    clip_up = column_values(page, 4)
    assert [float(v) for v in clip_up[1:] if v] == sorted(present)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(ARTIFACTS / "leaderboard-unified-bench-sorted.png")
    assert (ARTIFACTS / "leaderboard-unified-bench-sorted.png").stat().st_size > 10_000
    assert page.problems == []


def test_filter_hides_rows(page, site):
    open_page(page, site / "tracks" / "unified-bench.html")
    page.evaluate(
        "(() => { const el = document.querySelector('.filter-text'); el.value = 'zeta';"
        " el.dispatchEvent(new Event('input')); })()"
    )
    visible = page.evaluate(
        "Array.from(document.querySelectorAll('#board tbody tr:not(.hidden)')).map(r => r.cells[1].getAttribute('data-sort'))"
    )
    assert visible == ["zeta"]
    page.click(".filter-protocol")
    page.evaluate(
        "(() => { const el = document.querySelector('.filter-text'); el.value = '';"
        " el.dispatchEvent(new Event('input')); })()"
    )
    kinds = page.evaluate(
        "Array.from(document.querySelectorAll('#board tbody tr:not(.hidden)')).map(r => r.getAttribute('data-protocol'))"
    )
    assert kinds and set(kinds) == {"match"}


def test_injected_markup_stays_text_and_never_runs(page, site):
    for path in (
        site / "tracks" / "unified-bench.html",
        site / "models" / f"{slug(PAYLOAD_NAME, 'run-evil')}.html",
        site / "runs" / f"{slug(PAYLOAD_NAME, 'run-evil')}.html",
        site / "compare" / "unified-bench.html",
    ):
        open_page(page, path)
        page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        page.drain(0.5)
        state = json.loads(
            page.evaluate(
                "JSON.stringify({pwned: typeof window.__pwned, title: document.title,"
                " handlers: document.querySelectorAll('[onerror],[onload],[onclick]').length,"
                " scripts: Array.from(document.scripts).map(s => s.type || s.src.split('/').pop()),"
                " text: document.body.innerText})"
            )
        )
        assert state["pwned"] == "undefined", path
        assert state["title"] != "pwned" and state["title"].endswith("Unified-Bench leaderboard"), path
        assert state["handlers"] == 0, path
        assert all(s in ("application/json",) or s.endswith(".js") for s in state["scripts"]), state["scripts"]
        assert page.problems == [], (path, page.problems)
        if path.parent.name == "models":
            assert PAYLOAD_NAME in state["text"] and PAYLOAD_CAPTION in state["text"]
        if path.parent.name == "compare":
            options = page.evaluate(
                "Array.from(document.querySelectorAll('#compare-a option')).map(o => o.textContent)"
            )
            assert any(o.startswith(PAYLOAD_NAME) for o in options)


def test_compare_page_renders_a_paired_table(page, site):
    open_page(page, site / "compare" / "unified-bench.html")
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('#compare-table tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    assert [r[0] for r in rows] == ["clip", "dinov2", "dinov3", "longclip"]
    assert all(r[4] in ("no", "yes, A higher", "yes, B higher") for r in rows)


def test_model_page_draws_plots_and_thumbnails(page, site):
    open_page(page, site / "models" / f"{slug('shapes-a', 'run-shapes-a')}.html")
    page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    page.drain(1.0)
    plots = page.evaluate(
        "Array.from(document.querySelectorAll('.plot')).map(p => p.querySelectorAll('svg.main-svg').length > 0)"
    )
    assert plots and all(plots)
    sizes = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
    assert sizes and all(w > 0 for w in sizes)
    page.screenshot(ARTIFACTS / "leaderboard-model-shapes.png")
    assert page.problems == []


# --- the published record beside a reproduced run -------------------------------------------------


@pytest.fixture(scope="module")
def record_site(tmp_path_factory) -> Path:
    return make_record_world(tmp_path_factory.mktemp("lb-record"))["site"]


def board_rows(page) -> list[dict]:
    return page.evaluate(
        "(() => { const heads = Array.from(document.querySelectorAll('#board thead th')).map(h => h.textContent.trim());"
        " return Array.from(document.querySelectorAll('#board tbody tr')).map(r => {"
        "  const row = {kind: r.getAttribute('data-kind'), status: r.getAttribute('data-status')};"
        "  heads.forEach((h, i) => { row[h] = r.cells[i].getAttribute('data-sort'); row[h + ' text'] = r.cells[i].textContent.trim(); });"
        "  return row; }); })()"
    )


def test_reported_and_reproduced_rows_are_marked_sorted_and_linked(page, record_site):
    """Every published row is on the board with its reported mark, beside the reproduced runs;
    sorting a shared metric orders each section, never mixing reported and reproduced rows."""
    open_page(page, record_site / "tracks" / "unified-bench.html")
    rows = board_rows(page)
    assert sum(r["kind"] == "reported" for r in rows) == len(RECORD_ENTRIES)
    assert sorted(r["Model"] for r in rows if r["kind"] == "reproduced") == ["janus-pro-7b", "mock"]
    marks = page.evaluate(
        "Array.from(document.querySelectorAll('#board tbody tr')).map(r => r.querySelector('.prov .badge').textContent.trim())"
    )
    assert set(marks) == {"reported", "reproduced here"} and marks.count("reported") == len(RECORD_ENTRIES)
    # numbers as printed: Janus-Pro's DINO-v2 keeps its trailing zero, Table 1's score its one decimal
    janus = next(r for r in rows if r["Model"] == "Janus-Pro")
    assert janus["dinov2 text"] == "78.30" and janus["unified score text"].startswith("82.77")
    table1 = next(r for r in rows if r["Model"] == "Janus-Pro (Table 1 baseline)")
    assert table1["unified score text"] == "82.8" and table1["clip"] == ""  # not printed: stays absent
    # sort on a shared metric: reported rows first, ordered among themselves, missing last; then the runs
    page.click("#board thead th:nth-child(5) button")
    rows = board_rows(page)
    kinds = [r["kind"] for r in rows]
    assert kinds == sorted(kinds, key=lambda k: k != "reported")
    reported_clip = [r["clip"] for r in rows if r["kind"] == "reported"]
    present = [float(v) for v in reported_clip if v]
    assert present == sorted(present, reverse=True) and reported_clip[: len(present)] == [v for v in reported_clip if v]
    # Tables 2, 3 and 10 print CLIP, Table 1 and the 86.09 entry do not; the best is Table 10's GPT-Image*, over
    # 2000 images, which its Samples cell says
    assert present[0] == 91.37 and len(present) == 14
    top = next(r for r in rows if r["clip"] == "91.37")
    assert top["Model"] == "GPT-Image* (2000 images)" and top["Samples"] == "2000"
    # the published rows the janus-pro-7b preset targets link to its model page
    links = page.evaluate(
        "Array.from(document.querySelectorAll('#board tbody tr')).filter(r => r.querySelector('.reproductions'))"
        ".map(r => [r.cells[1].getAttribute('data-sort'), r.querySelector('.reproductions a').getAttribute('href')])"
    )
    assert sorted(m for m, _ in links) == ["Janus-Pro", "Janus-Pro (Table 1 baseline)"]
    assert {h for _, h in links} == {f"../models/{slug('janus-pro-7b', 'run-janus-pro-7b')}.html"}
    page.screenshot(ARTIFACTS / "leaderboard-record-sorted-by-clip.png")
    assert page.problems == []


def test_a_model_page_shows_its_reported_and_reproduced_rows_side_by_side(page, record_site):
    open_page(page, record_site / "models" / f"{slug('janus-pro-7b', 'run-janus-pro-7b')}.html")
    sections = page.evaluate(
        "Array.from(document.querySelectorAll('section.side-by-side')).map(s => ({"
        " title: s.querySelector('h3').textContent.trim(),"
        " heads: Array.from(s.querySelectorAll('thead th')).map(h => h.textContent.trim()),"
        " rows: Array.from(s.querySelectorAll('tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent.trim()))}))"
    )
    assert [s["title"] for s in sections] == ["Janus-Pro on Unified-Bench", "Janus-Pro (Table 1 baseline) on Unified-Bench"]
    table2 = sections[0]
    assert "reproduced here" in table2["heads"][1] and "reported" in table2["heads"][2]
    lines = {row[0]: row for row in table2["rows"]}
    assert [row[0] for row in table2["rows"]] == ["unified score", "clip", "dinov2", "dinov3", "longclip", "samples"]
    printed = {"unified score": "82.77", "clip": "88.72", "dinov2": "78.30", "dinov3": "70.61", "longclip": "93.45"}
    for metric, value in printed.items():
        mine, theirs, difference = lines[metric][1], lines[metric][2], lines[metric][3]
        assert theirs == value
        assert float(difference) == pytest.approx(float(mine.split()[0]) - float(value), abs=0.011)
        assert lines[metric][4] in ("yes", "no")
    assert lines["samples"][1:3] == ["6", "100"]
    # Table 1 prints only the overall: one shared line, the rest named as not printed
    table1 = sections[1]
    assert [row[0] for row in table1["rows"]] == ["unified score", "samples"] and table1["rows"][0][2] == "82.8"
    text = page.evaluate("document.body.textContent")
    assert "In this run, not printed by the source: clip, dinov2, dinov3, longclip." in " ".join(text.split())
    assert "7B is inferred, not stated" in text
    page.screenshot(ARTIFACTS / "leaderboard-model-side-by-side.png")
    assert (ARTIFACTS / "leaderboard-model-side-by-side.png").stat().st_size > 10_000
    assert page.problems == []


# --- trips and cycles: the unification profile, cycle curves, chains, trip columns ---------------


@pytest.fixture(scope="module")
def trip_site(tmp_path_factory) -> dict:
    from unified_bench.leaderboard import build_site
    from unified_bench.leaderboard.entries import load_entries

    root = tmp_path_factory.mktemp("lb-trips")
    runs = make_trip_runs(root / "runs")
    build_site([root / "runs"], [], root / "site")
    entries = {next(k for k, p in runs.items() if p == e.run_dir): e for e in load_entries([root / "runs"]).runs}
    return {"site": root / "site", "pages": {k: slug(e.model_name, e.run_id) for k, e in entries.items()}, "entries": entries}


def test_model_page_shows_the_profile_cycle_curves_and_chains(page, trip_site):
    open_page(page, trip_site["site"] / "models" / f"{trip_site['pages']['long-image']}.html")
    page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    page.drain(1.0)
    profile = page.evaluate(
        "Array.from(document.querySelectorAll('#profile .profile-table tbody tr')).map(r =>"
        " [r.getAttribute('data-trip')].concat(Array.from(r.cells).map(c => c.textContent.trim())))"
    )
    assert [row[0] for row in profile] == ["image", "text"]
    image, text = profile
    assert image[2].startswith("this run") and image[3] == "3" and image[4].startswith("100.00") and image[6].startswith("0.00")
    assert text[3] == "3" and text[4].startswith("100.00")
    plots = json.loads(page.evaluate(
        "JSON.stringify(Array.from(document.querySelectorAll('figure.cycle-plot')).map(f => ({"
        " trip: f.getAttribute('data-trip'), metric: f.getAttribute('data-metric'),"
        " title: f.querySelector('svg > title').textContent, desc: f.querySelector('svg > desc').textContent,"
        " labelled: f.querySelector('svg').getAttribute('aria-labelledby'),"
        " axes: Array.from(f.querySelectorAll('svg .axis-label')).map(t => t.textContent),"
        " circles: f.querySelectorAll('.series-original circle').length, squares: f.querySelectorAll('.series-previous rect').length,"
        " bands: f.querySelectorAll('path.band').length, dashed: getComputedStyle(f.querySelector('.series-previous .line')).strokeDasharray,"
        " solid: getComputedStyle(f.querySelector('.series-original .line')).strokeDasharray,"
        " width: f.querySelector('svg').getBoundingClientRect().width,"
        " legend: f.querySelector('figcaption').textContent,"
        " rows: Array.from(f.querySelectorAll('table.cycle-table tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent.trim()))})))"
    ))
    assert [(p["trip"], p["metric"]) for p in plots] == [("image", "shapes-attr"), ("image", "ssim"), ("text", "shapes-attr"), ("text", "ssim")]
    for plot in plots:
        assert plot["title"] == f"{plot['metric']} over 3 cycles, {plot['trip']} trip"
        assert plot["desc"].startswith(f"Mean {plot['metric']} x100 per cycle against the original: cycle 1 ")
        assert plot["labelled"].endswith("-title " + plot["labelled"].split()[0][:-6] + "-desc")
        assert plot["axes"] == [f"{plot['metric']} (x100)", "cycle"]
        assert (plot["circles"], plot["squares"], plot["bands"]) == (3, 2, 2)
        assert plot["dashed"] not in ("none", "") and plot["solid"] in ("none", "")
        assert plot["width"] > 200 and "vs the previous cycle (dashed" in plot["legend"]
        assert [row[0] for row in plot["rows"]] == ["1", "2", "3"] and plot["rows"][0][3] == "(cycle 1 has none)"
    assert plots[0]["rows"][2][1].startswith("100.00") and plots[0]["rows"][2][3].startswith("100.00")
    # the gallery: each sample's chain, the pruned drawing marked, every shown image decoded
    chain = page.evaluate(
        "Array.from(document.querySelectorAll('.chain-gallery tr[data-sample=\"%s\"] ol.chain li')).map(li =>"
        " [li.querySelector('.step-label').textContent, li.querySelector('img') ? 'img' : li.textContent.trim()])" % PRUNED_SAMPLE
    )
    assert [label for label, _ in chain] == ["original", "cycle 1 caption", "cycle 1 image", "cycle 2 caption", "cycle 2 image",
                                             "cycle 3 caption", "cycle 3 image"]
    assert chain[0][1] == chain[2][1] == chain[4][1] == "img" and chain[6][1].endswith("image not kept")
    assert chain[1][1].startswith("cycle 1 caption") and "objects" in chain[1][1]
    sizes = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) >= 6 * 4 - 1 and all(done and width > 0 for done, width in sizes)
    page.screenshot(ARTIFACTS / "leaderboard-model-profile.png")
    assert (ARTIFACTS / "leaderboard-model-profile.png").stat().st_size > 10_000
    assert page.problems == []


def test_text_trip_chain_keeps_an_injected_caption_as_text(page, trip_site):
    open_page(page, trip_site["site"] / "models" / f"{trip_site['pages']['short-text']}.html")
    page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    page.drain(0.5)
    first = trip_site["entries"]["short-text"].samples[0].sample_id
    state = json.loads(page.evaluate(
        "JSON.stringify({pwned: typeof window.__pwned, handlers: document.querySelectorAll('[onerror]').length,"
        " labels: Array.from(document.querySelectorAll('.chain-gallery tr[data-sample=\"%s\"] .step-label')).map(l => l.textContent),"
        " cycle2: document.querySelectorAll('.chain-gallery tr[data-sample=\"%s\"] .step')[4].querySelector('.caption-text').textContent})"
        % (first, first)
    ))
    assert state["pwned"] == "undefined" and state["handlers"] == 0
    assert state["labels"] == ["prompt", "cycle 1 image", "cycle 1 caption", "cycle 2 image", "cycle 2 caption", "cycle 3 image",
                               "cycle 3 caption"]
    assert state["cycle2"] == PAYLOAD_CAPTION
    assert page.problems == []


def test_track_table_has_text_trip_and_drift_columns(page, trip_site):
    open_page(page, trip_site["site"] / "tracks" / "shapes.html")
    rows = board_rows(page)
    heads = page.evaluate("Array.from(document.querySelectorAll('#board thead th')).map(h => h.textContent.trim())")
    assert heads[-5:] == ["text trip shapes-attr F1", "image drift", "text drift", "Protocol", "Samples"]
    assert heads[:4] == ["Rank", "Model", "Provenance", "shapes-attr F1"]
    by_model = {r["Model"]: r for r in rows}
    assert sorted(by_model) == ["shapes-oracle", "shapes-oracle (short captions)"]  # no row for a text-trip run
    long, short = by_model["shapes-oracle"], by_model["shapes-oracle (short captions)"]
    assert long["text trip shapes-attr F1"] == "100.0" and long["text trip shapes-attr F1 text"].startswith("100.00 [100.00, 100.00]")
    assert short["text trip shapes-attr F1"] == "0.0"
    assert long["image drift"] == "0.0" and "cycles 1→3" in long["image drift text"]
    link = page.evaluate("document.querySelector('#board tbody td.trip-col a').getAttribute('href')")
    assert link.endswith(".html") and link.startswith("../models/shapes-oracle")
    page.click("#board thead th:nth-child(%d) button" % (heads.index("text trip shapes-attr F1") + 1))  # sortable like the rest
    assert [r["text trip shapes-attr F1"] for r in board_rows(page)] == ["100.0", "0.0"]
    page.screenshot(ARTIFACTS / "leaderboard-shapes-trips.png")
    assert page.problems == []


def test_compare_page_pairs_the_text_trip_and_later_cycles(page, trip_site):
    open_page(page, trip_site["site"] / "compare" / "shapes.html")
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('#compare-table tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )
    by_metric = {r[0]: r for r in rows}
    assert [r[0] for r in rows][-5:] == ["cycle 2: shapes-attr", "cycle 3: shapes-attr", "text trip: shapes-attr",
                                         "text trip cycle 2: shapes-attr", "text trip cycle 3: shapes-attr"]
    # the long-caption oracle keeps every object on both trips, the short one none: 100 points, all 6 samples
    for metric in ("cycle 3: shapes-attr", "text trip: shapes-attr", "text trip cycle 3: shapes-attr"):
        assert abs(float(by_metric[metric][1])) == 100.0 and by_metric[metric][3] == "6" and by_metric[metric][4].startswith("yes")
    assert page.problems == []
