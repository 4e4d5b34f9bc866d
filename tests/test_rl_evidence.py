"""The committed evidence behind docs/unified-grpo.md (issue 22, finding 3): per-sample test
scores derived from the committed leaderboard entries, the ledger of test-split looks, and the
look-corrected summary ``uae-reference rl evidence`` prints from those files alone."""

from __future__ import annotations

import csv
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


def test_committed_scores_are_the_committed_entries(tmp_path):
    """seed-0/ is what the derive command makes of leaderboard/entries/shapes/uae-tiny-rl, to the byte."""
    fresh = derive_seed(ENTRIES_DIR, tmp_path, 0)
    for stage in STAGES:
        assert (fresh / f"{stage}.csv").read_bytes() == (EVIDENCE_DIR / "seed-0" / f"{stage}.csv").read_bytes()
    assert (fresh / "manifest.json").read_bytes() == (EVIDENCE_DIR / "seed-0" / "manifest.json").read_bytes()
    evidence = read_evidence()
    assert list(evidence) == [0] and all(len(evidence[0][s]["shapes-attr"]) == 200 for s in STAGES)


def test_the_docs_quote_what_the_command_prints(summary):
    assert read_block(DOC.read_text(encoding="utf-8"), "rl-evidence") == evidence_markdown(summary)


def test_the_ledger_counts_the_looks():
    ledger = read_ledger()
    assert looks_at(ledger, "g4u") == 7 and looks_at(ledger, "u4g") == 8
    assert all(e.reconstructed for e in ledger)  # no ledger was kept before issue 22
    for entry in ledger:
        assert entry.date[:4] == "2026" and len(entry.date) == 10 and entry.purpose and entry.source
        assert set(entry.stage.split(", ")) <= set(STAGES)
        if entry.new_look:
            assert entry.stage in STAGES  # a new look is at one stage's checkpoint


def test_one_seed_has_no_spread_and_u4g_is_not_shown(summary):
    text = evidence_markdown(summary)
    assert text.count("undefined (n=1 seed)") == 8  # spread and t-interval of 4 changes
    u4g = [c for c in summary.changes if c.after == "u4g"]
    assert u4g and not any(c.corrected_excludes_zero for c in u4g)  # what the docs must say plainly
    g4u = [c for c in summary.changes if c.after == "g4u"]
    assert all(c.corrected_excludes_zero and c.corrected[0] > 0 for c in g4u)
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
    assert "| g4u -> u4g | shapes-attr | 0 | 200 |" in result.output and "undefined (n=1 seed)" in result.output
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
