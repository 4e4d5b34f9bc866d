"""The committed evidence behind docs/unified-grpo.md (issue 22, finding 3): per-sample test
scores derived from the committed leaderboard entries, the ledger of test-split looks, and the
look-corrected summary ``uae-reference rl evidence`` prints from those files alone."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from uae_reference.rl.doc_blocks import read_block, write_block
from uae_reference.rl.evidence import (
    ENTRIES_DIR,
    EVIDENCE_DIR,
    STAGES,
    derive_seed,
    evidence_markdown,
    looks_at,
    read_evidence,
    read_ledger,
    summarise,
)
from unified_bench.core.errors import ConfigError

DOC = Path(__file__).resolve().parents[1] / "docs" / "unified-grpo.md"


@pytest.fixture(scope="module")
def summary():
    return summarise()


def test_committed_scores_agree_with_the_committed_entries(tmp_path):
    """seed-0/ holds all 1000 test scenes of the shipped checkpoints; its first 200 rows are what
    the derive command makes of leaderboard/entries/shapes/uae-tiny-rl (the same checkpoints,
    seeds and batches run again on another day): F1 identical, effnet and ssim equal up to the
    float rounding of a few pixels (a decoder output rounds one level differently in about one
    image in seven), so the entries vouch for the 1000-scene file."""
    fresh = derive_seed(ENTRIES_DIR, tmp_path, 0)
    for stage in STAGES:
        entries = list(csv.DictReader((fresh / f"{stage}.csv").open()))
        committed = list(csv.DictReader((EVIDENCE_DIR / "seed-0" / f"{stage}.csv").open()))
        assert len(entries) == 200 and len(committed) == 1000
        for mine, shipped in zip(committed, entries):
            assert mine["sample_id"] == shipped["sample_id"] and mine["shapes-attr"] == shipped["shapes-attr"]
            assert abs(float(mine["effnet"]) - float(shipped["effnet"])) < 2e-3
            assert abs(float(mine["ssim"]) - float(shipped["ssim"])) < 1e-4
    manifest = json.loads((EVIDENCE_DIR / "seed-0" / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["stages"] == list(STAGES) and manifest["source"] == "runs/s12/eval-seed0"
    evidence = read_evidence()
    assert sorted(evidence) == [0, 1, 2] and all(len(evidence[0][s]["shapes-attr"]) == 1000 for s in STAGES)
    assert all(sorted(evidence[k]) == ["g4u", "u4g"] and len(evidence[k]["u4g"]["effnet"]) == 1000 for k in (1, 2))
    for k in (1, 2):  # a U4G seed starts from the shipped G4U: its g4u scores are seed 0's
        assert (EVIDENCE_DIR / f"seed-{k}" / "g4u.csv").read_bytes() == (EVIDENCE_DIR / "seed-0" / "g4u.csv").read_bytes()


def test_the_docs_quote_what_the_command_prints(summary):
    assert read_block(DOC.read_text(encoding="utf-8"), "rl-evidence") == evidence_markdown(summary)


def test_the_ledger_counts_the_looks():
    ledger = read_ledger()
    assert looks_at(ledger, "g4u") == 7 and looks_at(ledger, "u4g") == 10
    # no ledger was kept before issue 22: those rows were reconstructed; the later ones were
    # written before their evaluation ran
    assert all(e.reconstructed for e in ledger if e.date < "2026-12-07")
    written = [e for e in ledger if not e.reconstructed]
    assert [(e.stage, e.seed, e.new_look) for e in written] == [
        ("pre-rl, g4u, u4g", "0", False), ("u4g", "1", True), ("u4g", "2", True)
    ] + [(e.stage, e.seed, e.new_look) for e in written[3:]]
    assert all(e.result != "pending" for e in ledger)
    for entry in ledger:
        assert entry.date[:4] == "2026" and len(entry.date) == 10 and entry.purpose and entry.source
        assert set(entry.stage.split(", ")) <= set(STAGES)
        if entry.new_look:
            assert entry.stage in STAGES  # a new look is at one stage's checkpoint


def test_what_the_committed_evidence_shows(summary):
    """The facts docs/unified-grpo.md states in words: G4U has one training seed (its spread is
    undefined) and its gain holds after the correction; U4G has three seeds, and its gain holds
    across them (the t-interval over seeds excludes zero for F1 and effnet), with one seed's
    corrected F1 interval including zero."""
    text = evidence_markdown(summary)
    assert text.count("undefined (n=1 seed)") == 4  # spread and t-interval of G4U's two changes
    assert "- One training seed for pre-rl -> g4u: how much that change varies" in text
    g4u = [c for c in summary.changes if c.after == "g4u"]
    assert [c.seed for c in g4u] == [0, 0] and all(c.corrected_excludes_zero and c.corrected[0] > 0 for c in g4u)
    u4g = {(c.metric, c.seed): c for c in summary.changes if c.after == "u4g"}
    assert sorted(u4g) == [(m, k) for m in ("effnet", "shapes-attr") for k in (0, 1, 2)]
    assert all(u4g[("effnet", k)].corrected_excludes_zero and u4g[("effnet", k)].mean > 0 for k in (0, 1, 2))
    assert [u4g[("shapes-attr", k)].corrected_excludes_zero for k in (0, 1, 2)] == [True, True, False]
    across = {(a.after, a.metric): a for a in summary.across}
    for metric in ("shapes-attr", "effnet"):
        assert across[("u4g", metric)].seeds == 3 and across[("u4g", metric)].ci95[0] > 0
    for c in summary.changes:  # the corrected interval is the wider one
        assert c.corrected[0] <= c.ci95[0] <= c.mean <= c.ci95[1] <= c.corrected[1]
        assert c.corrected_level == pytest.approx(1 - 0.05 / c.looks)


def test_a_second_seed_drops_in(tmp_path):
    shutil.copy(EVIDENCE_DIR / "ledger.csv", tmp_path / "ledger.csv")
    shutil.copytree(EVIDENCE_DIR / "seed-0", tmp_path / "seed-0")
    (tmp_path / "seed-1").mkdir()
    for stage in STAGES:  # a made-up second seed: U4G's F1 per sample 0.01 lower
        rows = list(csv.DictReader((EVIDENCE_DIR / "seed-0" / f"{stage}.csv").open()))
        with (tmp_path / "seed-1" / f"{stage}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                if stage == "u4g":
                    row["shapes-attr"] = repr(float(row["shapes-attr"]) - 0.01)
                writer.writerow(row)
    result = summarise(tmp_path, resamples=200)
    across = {(a.after, a.metric): a for a in result.across}
    one = next(c for c in result.changes if (c.after, c.metric, c.seed) == ("u4g", "shapes-attr", 0))
    f1 = across[("u4g", "shapes-attr")]
    assert f1.seeds == 2 and f1.mean == pytest.approx(one.mean - 0.005) and f1.spread == pytest.approx(0.01 / 2**0.5)
    assert across[("u4g", "effnet")].spread == pytest.approx(0.0, abs=1e-12)
    assert "undefined" not in evidence_markdown(result)


def test_the_command_needs_only_the_committed_files(tmp_path, monkeypatch):
    from uae_reference.cli import app

    monkeypatch.chdir(tmp_path)  # no runs/ here
    runner = CliRunner()
    result = runner.invoke(app, ["rl", "evidence", "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert "| g4u -> u4g | shapes-attr | 0 | 1000 |" in result.output and "undefined (n=1 seed)" in result.output
    assert not (tmp_path / "runs").exists()
    result = runner.invoke(app, ["rl", "evidence", "--derive-from", str(tmp_path), "--dir", str(tmp_path / "e")])
    assert isinstance(result.exception, ConfigError) and "--seed" in str(result.exception)  # the CLI prints it, no traceback
    with pytest.raises(ConfigError, match="no seed"):
        read_evidence(tmp_path)


def test_doc_blocks_round_trip(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- x:begin -->\nold\n<!-- x:end -->\nafter\n")
    write_block(page, "x", "new\nlines\n")
    assert page.read_text() == "intro\n<!-- x:begin -->\nnew\nlines\n<!-- x:end -->\nafter\n"
    assert read_block(page.read_text(), "x") == "new\nlines\n"
    with pytest.raises(ConfigError, match="y:begin"):
        write_block(page, "y", "z")


def test_a_u4g_seed_from_a_shared_g4u_counts_once(tmp_path):
    """A U4G seed trained from seed 0's G4U checkpoint has g4u and u4g only: the shared G4U change
    is not counted twice, its note says where it started, and the t-interval over seeds is the
    textbook one."""
    from scipy.stats import t

    from uae_reference.rl.evidence import seed_mean_ci

    shutil.copy(EVIDENCE_DIR / "ledger.csv", tmp_path / "ledger.csv")
    derived = derive_seed(ENTRIES_DIR, tmp_path, 0)
    one = derive_seed(ENTRIES_DIR, tmp_path, 1, stages=("g4u", "u4g"), note="U4G seed 1 from seed 0's G4U")
    assert sorted(p.name for p in one.iterdir()) == ["g4u.csv", "manifest.json", "u4g.csv"]
    assert "--stages g4u,u4g" in (one / "manifest.json").read_text() and derived.name == "seed-0"
    rows = list(csv.DictReader((one / "u4g.csv").open()))
    with (one / "u4g.csv").open("w", newline="") as handle:  # seed 1's U4G: effnet 0.002 lower per sample
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "effnet": repr(float(row["effnet"]) - 0.002)})
    result = summarise(tmp_path, resamples=200)
    across = {(a.after, a.metric): a for a in result.across}
    assert across[("g4u", "shapes-attr")].seeds == 1 and across[("u4g", "effnet")].seeds == 2
    effnet = [c.mean for c in result.changes if (c.after, c.metric) == ("u4g", "effnet")]
    assert effnet[0] - effnet[1] == pytest.approx(0.002)
    half = t.ppf(0.975, 1) * 0.002 / 2**0.5 / 2**0.5  # sd of two values 0.002 apart is 0.002 / sqrt(2)
    low, high = across[("u4g", "effnet")].ci95
    assert (low + high) / 2 == pytest.approx(sum(effnet) / 2) and (high - low) / 2 == pytest.approx(half)
    assert seed_mean_ci([0.1]) is None
    text = evidence_markdown(result)
    assert "- Seed 1: U4G seed 1 from seed 0's G4U" in text
    with pytest.raises(ConfigError, match="stages must be"):
        derive_seed(ENTRIES_DIR, tmp_path, 2, stages=("u5g",))
