"""Ranks that ties share (leaderboard.ranking): rank = 1 + the rows significantly better by the
paired bootstrap with Holm's correction; each track's resolution; rows left unranked with a
reason. Real run directories, verified by pinning their fingerprint as `dataset pin` would."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from leaderboard_runs import PAPER, PAYLOAD_NAME, REPORTED_ENTRIES, make_verified_run, write_references

import unified_bench.leaderboard.tracks as tracks
from unified_bench.core.stats import minimum_detectable_effect
from unified_bench.leaderboard import build_site, load_entries
from unified_bench.leaderboard.ranking import RANK_RESAMPLES, rank_runs
from unified_bench.leaderboard.tracks import get_track

SAMPLES = 30


@pytest.fixture
def three(tmp_path, monkeypatch):
    """Two runs from the same distribution (quality 0.7) and one clearly better (0.8), verified."""
    refs = write_references(tmp_path / "refs", SAMPLES)
    runs = tmp_path / "runs"
    fingerprint = make_verified_run(runs / "a", refs, model="alpha", run_id="run-a", quality=0.7, seed=11)
    make_verified_run(runs / "b", refs, model="beta", run_id="run-b", quality=0.7, seed=12)
    make_verified_run(runs / "c", refs, model="gamma", run_id="run-c", quality=0.8, seed=13)
    monkeypatch.setattr(tracks, "official_pins", lambda: {"fingerprint": fingerprint, "count": SAMPLES})
    return {"root": tmp_path, "runs": runs, "refs": refs}


def _composites(run_dir) -> np.ndarray:
    """Per-sample unified score x100, from results.json alone."""
    data = json.loads((run_dir / "results.json").read_text())
    ids = sorted(s["sample_id"] for s in data["samples"])
    return 100 * np.array([[data["similarities_by_model"][m][i] for i in ids] for m in PAPER]).mean(axis=0)


def _independent_ranks(scores: dict[str, np.ndarray], alpha: float = 0.05) -> dict[str, tuple[int, int]]:
    """The rule from the issue, computed here: paired bootstrap p (seed 0, the board's resamples)
    per pair, Holm's procedure over each row's comparisons, rank bounds."""
    n = len(next(iter(scores.values())))
    idx = np.random.default_rng(0).integers(0, n, size=(RANK_RESAMPLES, n))
    draws = {k: v[idx].mean(axis=1) for k, v in scores.items()}
    out = {}
    for me in scores:
        others = [o for o in scores if o != me]
        ps = []
        for o in others:
            d = draws[o] - draws[me]
            ps.append(min(1.0, 2 * (1 + min((d <= 0).sum(), (d >= 0).sum())) / (1 + d.size)))
        significant = set()
        for k, i in enumerate(sorted(range(len(ps)), key=lambda i: ps[i])):
            if ps[i] > alpha / (len(ps) - k):
                break
            significant.add(others[i])
        better = sum(1 for o in significant if scores[o].mean() > scores[me].mean())
        worse = sum(1 for o in significant if scores[o].mean() < scores[me].mean())
        out[me] = (1 + better, len(scores) - worse)
    return out


def _track(site, slug="unified-bench") -> dict:
    board = json.loads((site / "leaderboard.json").read_text(encoding="utf-8"))
    return next(t for t in board["tracks"] if t["slug"] == slug)


def test_rows_the_set_cannot_separate_share_a_rank(three):
    """Acceptance 2: the two alike share rank 2 (could be 2-3), the better one is rank 1 alone;
    leaderboard.json carries the bounds and the track's resolution; the page shows both."""
    site = three["root"] / "site"
    build_site([three["runs"]], [REPORTED_ENTRIES], site)
    track = _track(site)
    rows = {r["label"]: r for r in track["rows"]}
    assert [(r["label"], r["rank"]) for r in track["rows"]] == [("gamma", 1), ("alpha", 2), ("beta", 2), ("UAE", None)]
    assert (rows["gamma"]["rank_lower"], rows["gamma"]["rank_upper"]) == (1, 1)
    assert (rows["alpha"]["rank_lower"], rows["alpha"]["rank_upper"]) == (2, 3) == (rows["beta"]["rank_lower"], rows["beta"]["rank_upper"])
    assert all(rows[k]["rank_note"] is None and rows[k]["status"] == "verified" for k in ("alpha", "beta", "gamma"))
    assert rows["UAE"]["rank_note"].startswith("not ranked by the paired rule: a reported number has no per-sample scores")
    scores = {label: _composites(three["runs"] / d) for label, d in (("alpha", "a"), ("beta", "b"), ("gamma", "c"))}
    assert _independent_ranks(scores) == {k: (rows[k]["rank_lower"], rows[k]["rank_upper"]) for k in scores}
    # resolution: the MDE at the set size from the pooled variance of the pairs' per-sample differences
    pooled = np.sqrt(np.mean([np.var(scores[b] - scores[a], ddof=1) for a, b in (("alpha", "beta"), ("alpha", "gamma"), ("beta", "gamma"))]))
    resolution = track["resolution"]
    assert resolution["samples"] == SAMPLES and resolution["runs"] == 3 and resolution["power"] == 0.8
    assert resolution["sd_difference"] == pytest.approx(pooled)
    assert resolution["mde"] == pytest.approx(minimum_detectable_effect(SAMPLES) * pooled)
    assert abs(scores["alpha"].mean() - scores["beta"].mean()) < resolution["mde"] < scores["gamma"].mean() - scores["alpha"].mean()
    assert resolution["note"] is None
    html = (site / "tracks" / "unified-bench.html").read_text(encoding="utf-8")
    assert f"With {SAMPLES} samples this track resolves differences of about {resolution['mde']:.2f} points (80 % power)." in html
    assert html.count("(shared)") == 2 and html.count("could be 2-3") == 2
    extended = _track(site, "unified-bench-extended")["resolution"]
    assert extended["mde"] is None and extended["note"].startswith("not enough runs (0 verified runs")
    assert "this track&#39;s resolution (80 % power) is not known: not enough runs" in (site / "tracks" / "unified-bench-extended.html").read_text()


def test_ranks_are_reproducible_and_depend_on_the_rows_not_their_order(three):
    entries = load_entries([three["runs"]]).runs
    track = get_track("unified-bench")
    first = rank_runs(track, entries)
    assert rank_runs(track, list(reversed(entries))) == first
    ranks, _ = first
    assert {k: (v.rank, v.upper) for k, v in ranks.items()} == {"run-a": (2, 3), "run-b": (2, 3), "run-c": (1, 1)}
    assert ranks["run-c"].worse == ("run-a", "run-b") and ranks["run-a"].better == ("run-c",)
    # a stricter level separates less, never more
    strict, _ = rank_runs(track, entries, alpha=1e-4)
    assert all(strict[k].rank <= ranks[k].rank for k in ranks)
    # the two alike alone share the lead, and the front page names both
    site = three["root"] / "site"
    build_site([three["runs"] / "a", three["runs"] / "b"], [], site)
    assert [(r["label"], r["rank"], r["rank_upper"]) for r in _track(site)["rows"]] == [("alpha", 1, 2), ("beta", 1, 2)]
    leader = (site / "index.html").read_text(encoding="utf-8").split('class="leader"')[1].split("</td>")[0]
    assert "alpha" in leader and "beta" in leader and "share rank 1" in leader


def test_bad_input_rows_are_left_unranked_with_their_reason(three, monkeypatch):
    """A copy of a run (a zero-variance difference), a missing score, fewer than 2 samples,
    another sample set: unranked with the reason, the others ranked, no NaN anywhere."""
    track = get_track("unified-bench")
    copy = three["runs"] / "copy"
    shutil.copytree(three["runs"] / "a", copy)
    data = json.loads((copy / "results.json").read_text())
    data["run"].update(run_id="run-copy", name=PAYLOAD_NAME)
    (copy / "results.json").write_text(json.dumps(data))
    entries = {e.run_id: e for e in load_entries([three["runs"]]).runs}
    ranks, resolution = rank_runs(track, list(entries.values()))
    assert ranks["run-a"].rank is None and ranks["run-copy"].rank is None
    assert "differs from " + PAYLOAD_NAME + " (run run-copy)'s by +0 points on every sample alike (zero variance)" in ranks["run-a"].note
    assert "differs from alpha (run run-a)'s by +0 points" in ranks["run-copy"].note
    assert (ranks["run-c"].rank, ranks["run-c"].upper, ranks["run-b"].rank, ranks["run-b"].upper) == (1, 1, 2, 2)
    assert resolution.runs == 4 and resolution.mde > 0  # the copy is still a run of the pool
    # the reason on the page is text: the payload in the model name is escaped
    site = three["root"] / "site"
    build_site([three["runs"]], [], site)
    html = (site / "tracks" / "unified-bench.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;window.__pwned=1" in html and "<script>window.__pwned" not in html
    assert html.count('class="note rank-note"') == 2
    text = (site / "leaderboard.json").read_text()
    assert "NaN" not in text and "Infinity" not in text

    # a score missing on one sample (a verified row cannot have one; a bad file could)
    broken = entries["run-b"]
    broken.samples[3].scores["dinov3"] = None
    ranks, _ = rank_runs(track, [entries["run-b"], entries["run-c"]])
    assert ranks["run-b"].note == "not ranked: no dinov3 score for 1 of 30 samples (ranks compare complete per-sample scores)"
    assert (ranks["run-c"].rank, ranks["run-c"].upper) == (1, 1)  # alone, it is first
    for sample in broken.samples:
        sample.scores.pop("clip")
    assert rank_runs(track, [broken])[0]["run-b"].note == "not ranked: clip is missing from this run"

    # fewer than 2 samples, and a row on other samples than the rest
    runs = three["root"] / "small"
    make_verified_run(runs / "x", three["refs"][:1], model="x", run_id="run-x", quality=0.6, seed=1)
    make_verified_run(runs / "y", three["refs"][:1], model="y", run_id="run-y", quality=0.9, seed=2)
    small = load_entries([runs]).runs
    ranks, resolution = rank_runs(track, small)
    assert all(r.rank is None and r.note == "not ranked: fewer than 2 samples (1); the set separates nothing" for r in ranks.values())
    assert resolution.mde is None and resolution.note == "fewer than 2 samples"
    ranks, _ = rank_runs(track, small[:1] + [entries["run-c"]])
    assert ranks["run-x"].note == "not ranked: scored on other samples than the 1 other verified row(s)" and ranks["run-c"].rank == 1
