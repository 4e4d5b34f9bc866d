"""The committed evidence behind docs/round-trips.md's answer for the reference model (issue 17):
the stages of the shipped uae-tiny on the text trip and over three cycles, 1000 test scenes.
Every paired change the docs quote comes back, to the bit, from the committed per-sample files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uae_reference.rl.doc_blocks import read_block
from uae_reference.rl.evaluate import read_cycle_scores, recompute_cycle_improvement

REPO = Path(__file__).resolve().parents[1]
EVIDENCE = REPO / "docs" / "evidence" / "round-trips"
DOC = REPO / "docs" / "round-trips.md"
STAGES = ("pre-rl", "g4u", "u4g")


@pytest.mark.parametrize("trip", ["image", "text"])
def test_every_change_comes_back_from_the_per_sample_files(trip):
    folder = EVIDENCE / trip
    report = json.loads((folder / "rl_evaluation.json").read_text())
    assert report["limit"] == 1000 and report["split"] == "test" and report["cycles"] == 3 and report["trip"] == trip
    assert [s["name"] for s in report["stages"]] == list(STAGES)
    changes = [{**c, "cycle": 1} for c in report["improvements"]] + report["cycle_improvements"]
    assert len(report["cycle_improvements"]) == 3 * 3 * len(report["stages"][0]["means"])  # 3 pairs x (2 cycles + drop)
    for change in changes:
        again = recompute_cycle_improvement(folder / f"{change['before']}.csv", folder / f"{change['after']}.csv",
                                            change["metric"], change["cycle"])
        assert change["n"] == 1000 and (again.estimate, again.low, again.high) == (change["mean"], change["low"], change["high"])
    for stage in report["stages"]:
        scores = read_cycle_scores(folder / f"{stage['name']}.csv")
        assert sorted(scores) == [1, 2, 3]
        for metric, curve in stage["curves"].items():
            means = [sum(scores[k][metric].values()) / len(scores[k][metric]) for k in (1, 2, 3)]
            assert means == pytest.approx(curve["by_cycle"], abs=1e-12)


@pytest.mark.parametrize("trip", ["image", "text"])
def test_the_docs_quote_the_reports(trip):
    text = (EVIDENCE / trip / "rl_evaluation.md").read_text()
    assert read_block(DOC.read_text(encoding="utf-8"), f"round-trip-{trip}") == text
