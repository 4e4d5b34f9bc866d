"""The built site in real headless Chromium, opened from file:// (no server, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cdp_browser import Chromium, chromium_path
from leaderboard_runs import PAYLOAD_CAPTION, PAYLOAD_NAME, make_world

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
