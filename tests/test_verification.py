"""Verification before ranking, leaderboard.json, `unified-bench table` and `dataset pin`.

The issue's scenario: 100 random-noise PNGs placed where the official set is looked for, `eval
--model mock --data official` with every paper metric pointed at a random-initialised tiny
checkpoint, then the leaderboard. The run must be unverified, unranked, with reasons naming
the metric weights and the dataset.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner_helpers import REPO, cli_env
from tiny_models import noise_image, tiny_clip, tiny_dinov2, tiny_dinov3, tiny_longclip_pt
from unified_bench.core.images import file_sha256
from unified_bench.core.protocol import PAPER_PROTOCOL, as_executed
from unified_bench.leaderboard import build_site
from unified_bench.leaderboard.tracks import SHAPES_FINGERPRINT, SHAPES_ORACLE_SHA256, get_track
from unified_bench.leaderboard.verification import NO_PINNED_FINGERPRINT, fingerprint_conflicts, verify_run
from unified_bench.results.record import RunRecord, dataset_fingerprint

ENTRIES = REPO / "leaderboard" / "entries"
#: the published record shipped there: one reported row per model row of each table found
RECORD_ROWS = sum(
    1 for p in ENTRIES.glob("*.json") if "reported" in (data := json.loads(p.read_text(encoding="utf-8"))) and data["track"] == "unified-bench"
)
PAPER_CHECKPOINTS = {
    "clip": "openai/clip-vit-large-patch14",
    "dinov2": "facebook/dinov2-large",
    "dinov3": "facebook/dinov3-vitl16-pretrain-lvd1689m",
    "longclip": "BeichenZhang/LongCLIP-L",
}


def cli(args: list[str], tmp: Path, env: dict[str, str] | None = None, timeout: float = 1200) -> subprocess.CompletedProcess:
    full = cli_env(tmp)
    full.update(env or {})
    result = subprocess.run([sys.executable, "-m", "unified_bench", *args], capture_output=True, text=True, timeout=timeout, env=full)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("noise")
    official = tmp / "official"
    official.mkdir()
    for i in range(100):
        noise_image(32, 32, i).save(official / f"{i}.png")
    ckpt = {
        "clip": tiny_clip(tmp / "clip"),
        "dinov2": tiny_dinov2(tmp / "dinov2"),
        "dinov3": tiny_dinov3(tmp / "dinov3"),
        "longclip": tiny_longclip_pt(tmp / "longclip.pt"),
    }
    run = tmp / "run"
    args = ["eval", "--model", "mock", "--data", "official", "--out", str(run), "--metrics", "paper"]
    for name, path in ckpt.items():
        args += ["--checkpoint", f"{name}={path}"]
    cli(args, tmp, {"UNIFIED_BENCH_OFFICIAL_DIR": str(official)})
    site = tmp / "site"
    build_site([run], [ENTRIES], site)
    return {"tmp": tmp, "official": official, "ckpt": ckpt, "run": run, "site": site}


def _track(board: dict, slug: str) -> dict:
    return next(t for t in board["tracks"] if t["slug"] == slug)


def test_noise_run_is_unverified_and_unranked(noise):
    board = json.loads((noise["site"] / "leaderboard.json").read_text(encoding="utf-8"))
    ub = _track(board, "unified-bench")
    (row,) = [r for r in ub["rows"] if r["provenance"] == "reproduced"]
    assert row["status"] == "unverified" and row["rank"] is None
    assert row["score"]["value"] > 86.09  # it would have led the board
    reasons = "\n".join(row["reasons"])
    for name, path in noise["ckpt"].items():
        assert f"metric weights: {name} checkpoint {path} is not the track's {PAPER_CHECKPOINTS[name]}" in reasons
    assert NO_PINNED_FINGERPRINT in row["reasons"]
    assert row["dataset_fingerprint"] == dataset_fingerprint(
        json.loads((noise["run"] / "results.json").read_text())["run"]["dataset"]["reference_sha256"]
    )
    assert set(row["metrics"]) == set(PAPER_CHECKPOINTS)
    assert {"value", "ci95_low", "ci95_high", "n"} <= set(row["metrics"]["clip"])
    assert row["model"] == "mock" and row["label"] == "mock"
    # the runner records the weights hash of every metric it loaded (what the weights check reads)
    recorded = {m["name"]: m for m in json.loads((noise["run"] / "results.json").read_text())["run"]["metrics"]}
    assert set(recorded) == set(PAPER_CHECKPOINTS) and all(m["revision"].startswith("sha256:") for m in recorded.values())
    assert recorded["longclip"]["revision"] == "sha256:" + hashlib.sha256(noise["ckpt"]["longclip"].read_bytes()).hexdigest()
    # the published rows keep their mark and are listed above the unverified run, unranked, best score first
    assert RECORD_ROWS == 19
    assert [r["status"] for r in ub["rows"]] == ["reported"] * RECORD_ROWS + ["unverified"]
    reported = ub["rows"][:RECORD_ROWS]
    assert all(r["rank"] is None for r in reported)
    scores = [r["score"]["value"] for r in reported]
    assert scores == sorted(scores, reverse=True) and scores[0] == 89.1  # Table 1's Janus-Pro w/ Unified-GRPO
    assert [r["label"] for r in reported].count("UAE") == 2 and 86.09 in scores
    assert ub["pinned"]["dataset_fingerprint"] is None and ub["pinned"]["samples"] == 100
    # nothing on any track is ranked; the shipped Shapes entries keep their rows and marks
    shapes = _track(board, "shapes")
    assert len(shapes["rows"]) == 6 and {r["provenance"] for r in shapes["rows"]} == {"reproduced"}
    assert all(r["rank"] is None and r["status"] == "unverified" for r in shapes["rows"])
    for r in shapes["rows"]:  # bundled weights and the pinned Shapes set pass; the tiny protocol does not
        assert [x.split(":")[0] for x in r["reasons"]] == ["protocol differs"], r["reasons"]
    assert shapes["pinned"]["dataset_fingerprint"] == SHAPES_FINGERPRINT


def test_site_shows_reasons_on_row_and_model_page(noise):
    html = (noise["site"] / "tracks" / "unified-bench.html").read_text(encoding="utf-8")
    assert 'data-status="unverified"' in html and "unverified · unranked" in html
    assert NO_PINNED_FINGERPRINT in html and str(noise["ckpt"]["clip"]) in html
    index = (noise["site"] / "index.html").read_text(encoding="utf-8")
    assert index.count("no verified row yet") == 3  # no track has a leader: nothing is verified
    (page,) = list((noise["site"] / "models").glob("mock-*.html"))
    text = page.read_text(encoding="utf-8")
    assert "<h2>Verification</h2>" in text and NO_PINNED_FINGERPRINT in text and str(noise["ckpt"]["longclip"]) in text


def _record(noise) -> dict:
    return json.loads((noise["run"] / "results.json").read_text())["run"]


def test_track_checkpoints_and_protocol_still_fail_on_the_dataset(noise):
    """Acceptance 1: the track's own checkpoints and protocol on the same folder are still not verified."""
    run = copy.deepcopy(_record(noise))
    for metric in run["metrics"]:
        metric["checkpoint"] = PAPER_CHECKPOINTS[metric["name"]]
        metric["revision"] = "0" * 40
    run["protocol_executed"] = as_executed(PAPER_PROTOCOL.to_dict())
    track = get_track("unified-bench")
    result = verify_run(RunRecord.from_dict(run), track)
    assert result.status == "unverified" and list(result.reasons) == [NO_PINNED_FINGERPRINT]
    # with the fingerprint pinned (what `dataset pin official` does) the same run is verified
    pinned = type(track)(**{**track.__dict__, "fingerprint": result.fingerprint})
    assert verify_run(RunRecord.from_dict(run), pinned).verified
    # another folder of 100 images is not the pinned set
    other = copy.deepcopy(run)
    first = sorted(other["dataset"]["reference_sha256"])[0]
    other["dataset"]["reference_sha256"][first] = "f" * 64
    reasons = verify_run(RunRecord.from_dict(other), pinned).reasons
    assert len(reasons) == 1 and reasons[0].startswith("dataset: fingerprint ")
    # a short run, a failed sample, a pinned hub revision
    short = copy.deepcopy(run)
    short["dataset"]["reference_sha256"] = dict(list(short["dataset"]["reference_sha256"].items())[:10])
    short["runner"]["failed"] = 2
    reasons = verify_run(RunRecord.from_dict(short), pinned).reasons
    assert "samples: 10 recorded, the set has 100" in reasons and "samples: 2 failed" in reasons
    from unified_bench.leaderboard.tracks import WeightsPin

    rev = type(track)(**{**track.__dict__, "fingerprint": result.fingerprint, "weights": (("clip", WeightsPin(PAPER_CHECKPOINTS["clip"], "a" * 40)),)})
    reasons = verify_run(RunRecord.from_dict(run), rev).reasons
    assert len(reasons) == 1 and reasons[0].startswith("metric weights: clip revision 0000")
    # a local path counts when its recorded weights hash is pinned
    local = copy.deepcopy(run)
    clip = next(m for m in local["metrics"] if m["name"] == "clip")
    clip["checkpoint"], clip["revision"] = "/somewhere/clip", "sha256:" + "b" * 64
    hashed = type(track)(**{**track.__dict__, "fingerprint": result.fingerprint, "weights": (("clip", WeightsPin(PAPER_CHECKPOINTS["clip"], None, ("b" * 64,))),)})
    assert verify_run(RunRecord.from_dict(local), hashed).verified
    assert not verify_run(RunRecord.from_dict(local), pinned).verified


def test_rows_on_different_images_are_flagged():
    track = get_track("unified-bench")
    flags = fingerprint_conflicts({"a": "1" * 64, "b": "1" * 64, "c": "2" * 64, "d": None}, track)
    assert set(flags) == {"a", "b", "c"} and "2 different fingerprints" in flags["c"]
    assert fingerprint_conflicts({"a": "1" * 64, "b": "1" * 64}, track) == {}
    assert fingerprint_conflicts({"a": "1" * 64, "c": "2" * 64}, get_track("shapes")) == {}  # pinned: the pin decides


def test_shapes_pins_match_what_ships():
    from unified_bench.tracks.shapes.oracle import BUNDLED_CHECKPOINT

    assert file_sha256(BUNDLED_CHECKPOINT) == SHAPES_ORACLE_SHA256
    for path in sorted((ENTRIES / "shapes").rglob("results.json")):
        record = RunRecord.from_dict(json.loads(path.read_text())["run"])
        assert record.dataset.fingerprint() == SHAPES_FINGERPRINT, path


@pytest.mark.parametrize("track", ["unified-bench", "shapes"])
def test_table_formats(noise, track, capsys):
    from unified_bench.cli import main

    base = ["table", "--runs", str(noise["run"]), "--entries", str(ENTRIES), "--track", track]
    out = {}
    for fmt in ("md", "csv", "latex", "json"):
        main(base + ["--format", fmt])
        out[fmt] = capsys.readouterr().out
    board = json.loads((noise["site"] / "leaderboard.json").read_text(encoding="utf-8"))
    expected = _track(board, track)
    assert json.loads(out["json"]) == expected  # the same rows as leaderboard.json
    rows = list(csv.DictReader(io.StringIO(out["csv"])))
    assert [r["model"] for r in rows] == [r["label"] for r in expected["rows"]]
    assert [r["status"] for r in rows] == [r["status"] for r in expected["rows"]]
    assert all(r["rank"] == "" for r in rows)
    score = expected["score"]
    assert score in rows[0] and f"{score} CI" in rows[0]
    md = out["md"].splitlines()
    assert md[0].startswith("|") and "rank" in md[0] and "status" in md[0] and set(md[1]) <= set("|-: ")
    assert len(md) == 2 + len(rows)
    assert "\\begin{tabular}" in out["latex"] and "\\toprule" in out["latex"] and out["latex"].count("\\\\") >= len(rows) + 1
    if track == "unified-bench":
        assert any("dataset not verified" in r["reasons"] for r in rows)
        assert "dataset not verified" in out["md"] and "dataset not verified" in out["latex"]


def test_dataset_pin_official(noise, tmp_path):
    from unified_bench.datasets.official import load_manifest, manifest_path

    manifest = tmp_path / "manifest.json"
    shutil.copy(manifest_path(), manifest)
    archive = tmp_path / "Image.zip"
    archive.write_bytes(b"not really a zip, only hashed")
    result = cli(["dataset", "pin", "official", "--dir", str(noise["official"]), "--manifest", str(manifest), "--archive", str(archive)], tmp_path)
    pinned = load_manifest(manifest)
    run = _record(noise)
    assert pinned.fingerprint == dataset_fingerprint(run["dataset"]["reference_sha256"])  # what the run recorded
    assert pinned.fingerprint in result.stdout
    assert pinned.archive_sha256 == file_sha256(archive)
    assert len(pinned.files) == 100 and pinned.files["7.png"] == file_sha256(noise["official"] / "7.png")
    # the packaged manifest is untouched; a second pin without an archive keeps the archive hash
    assert load_manifest().fingerprint is None
    cli(["dataset", "pin", "official", "--dir", str(noise["official"]), "--manifest", str(manifest), "--cache-dir", str(tmp_path / "c")], tmp_path)
    assert load_manifest(manifest).archive_sha256 == file_sha256(archive)


def test_a_verified_row_is_ranked_above_reported_and_unverified(noise, tmp_path, monkeypatch):
    """With the fingerprint pinned and the track's checkpoints and protocol recorded, the run is
    ranked 1 and leads; the original noise run (local checkpoints) stays unranked below."""
    import unified_bench.leaderboard.tracks as tracks

    good = tmp_path / "runs" / "good"
    shutil.copytree(noise["run"], good)
    data = json.loads((good / "results.json").read_text())
    run = data["run"]
    run["run_id"] = "verified-" + run["run_id"]
    for metric in run["metrics"]:
        metric["checkpoint"] = PAPER_CHECKPOINTS[metric["name"]]
    run["protocol_executed"] = as_executed(PAPER_PROTOCOL.to_dict())
    (good / "results.json").write_text(json.dumps(data))
    fingerprint = dataset_fingerprint(run["dataset"]["reference_sha256"])
    monkeypatch.setattr(tracks, "official_pins", lambda: {"fingerprint": fingerprint, "count": 100})
    site = tmp_path / "site"
    build_site([good, noise["run"]], [ENTRIES], site)
    ub = _track(json.loads((site / "leaderboard.json").read_text()), "unified-bench")
    assert [(r["rank"], r["status"]) for r in ub["rows"]] == (
        [(1, "verified")] + [(None, "reported")] * RECORD_ROWS + [(None, "unverified")]
    )
    assert ub["rows"][0]["reasons"] == [] and ub["rows"][0]["run_id"] == run["run_id"]
    assert not any("dataset" in reason for reason in ub["rows"][-1]["reasons"])  # same images: the pinned set
    index = (site / "index.html").read_text(encoding="utf-8")
    assert index.count("no verified row yet") == 2 and '<span class="badge badge-verified">verified</span>' in index
