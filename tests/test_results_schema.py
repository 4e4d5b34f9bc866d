"""results.json: the official script's keys and nesting, our additions, and the schema."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

import toy_metrics
from unified_bench.core.errors import ResultsValidationError
from unified_bench.results import load_results, validate_results
from unified_bench.scoring import ScoringConfig, score_folders

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "unified_bench" / "results" / "schema.json"
OFFICIAL_TOP = ("model_types", "similarities_by_model", "statistics_by_model", "summary")
OFFICIAL_STATS = {"total_images", "valid_pairs", "average_similarity", "min_similarity", "max_similarity"}
OFFICIAL_SUMMARY = {"models_used", "average_scores_by_model", "overall_average", "best_model", "worst_model"}


def make_folders(root: Path, n: int = 6, broken: tuple[int, ...] = ()) -> tuple[Path, Path]:
    refs, recons = root / "refs", root / "images"
    refs.mkdir(parents=True)
    recons.mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        ref = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
        Image.fromarray(ref).save(refs / f"img{i:02d}.png")
        if i in broken:
            (recons / f"recon_img{i:02d}.png").write_bytes(b"")
            continue
        noisy = np.clip(ref.astype(np.int16) + rng.integers(-15 * i, 15 * i + 1, size=ref.shape), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(recons / f"recon_img{i:02d}.png")
    return recons, refs


def score(root: Path, metrics: list[str], **kwargs) -> dict:
    recons, refs = make_folders(root, **kwargs)
    config = ScoringConfig(metrics=metrics, progress=False, use_cache=False)
    score_folders(recons, refs, root / "out", config)
    return json.loads((root / "out" / "results.json").read_text())


# ---------------------------------------------------------------- an independent consumer


def official_statistics(similarities: dict[str, float | None]) -> dict | None:
    """The official script's per-model statistics, recomputed from its similarity map."""
    valid = [value for value in similarities.values() if value is not None]
    if not valid:
        return None
    return {
        "total_images": len(similarities),
        "valid_pairs": len(valid),
        "average_similarity": sum(valid) / len(valid),
        "min_similarity": min(valid),
        "max_similarity": max(valid),
    }


def consume_like_official_tooling(results: dict) -> dict:
    """Read results.json the way code written for the official output reads it:
    plain dict indexing on its four keys, nothing else."""
    table = {}
    for model in results["model_types"]:
        sims = results["similarities_by_model"][model]
        stats = results["statistics_by_model"][model]
        table[model] = {
            "n": stats["valid_pairs"],
            "mean": stats["average_similarity"],
            "spread": stats["max_similarity"] - stats["min_similarity"],
            "per_image": {name: value for name, value in sims.items() if value is not None},
        }
    summary = results["summary"]
    best_name, best_score = summary["best_model"]
    worst_name, worst_score = summary["worst_model"]
    return {
        "table": table,
        "overall": summary["overall_average"],
        "best": (best_name, best_score),
        "worst": (worst_name, worst_score),
        "models": summary["models_used"],
        "averages": summary["average_scores_by_model"],
    }


def test_official_keys_and_nesting_exactly(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "clip", "dinov2", "toy-pair")
    results = score(tmp_path, ["clip", "dinov2", "toy-pair"], broken=(3,))

    for key in OFFICIAL_TOP:
        assert key in results
    assert results["model_types"] == ["clip", "dinov2", "toy-pair"]
    assert set(results["similarities_by_model"]) == set(results["model_types"])
    for model, sims in results["similarities_by_model"].items():
        assert list(sims) == [f"img{i:02d}" for i in range(6)]
        assert all(value is None or isinstance(value, float) for value in sims.values())
        assert sims["img03"] is None  # the broken reconstruction
        assert set(results["statistics_by_model"][model]) == OFFICIAL_STATS
        # every statistic is exactly what the official script computes from the same map
        assert results["statistics_by_model"][model] == pytest.approx(official_statistics(sims), rel=1e-12)
    assert set(results["summary"]) == OFFICIAL_SUMMARY

    averages = {m: official_statistics(s)["average_similarity"] for m, s in results["similarities_by_model"].items()}
    consumed = consume_like_official_tooling(results)
    assert consumed["overall"] == pytest.approx(sum(averages.values()) / len(averages), rel=1e-12)
    assert consumed["best"] == (max(averages, key=averages.get), pytest.approx(max(averages.values())))
    assert consumed["worst"] == (min(averages, key=averages.get), pytest.approx(min(averages.values())))
    assert consumed["models"] == list(averages)
    assert consumed["table"]["clip"]["n"] == 5
    assert consumed["table"]["clip"]["per_image"]["img00"] == pytest.approx(1.0, abs=1e-6)


def test_results_validate_against_the_schema_file(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "clip", "toy-pair")
    results = score(tmp_path, ["clip", "toy-pair"], broken=(1,))
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(results)  # the file, independently of our helper
    assert load_results(tmp_path / "out") == results
    assert results["errors"] == [
        {
            "sample_id": "img01",
            "stage": "load",
            "message": results["errors"][0]["message"],
            "metric": None,
        }
    ]
    assert "empty file" in results["errors"][0]["message"]
    run = results["run"]
    assert {"run_id", "created", "command", "package_versions", "metrics", "timings"} <= set(run)
    assert [m["name"] for m in run["metrics"]] == ["clip", "toy-pair"]
    assert run["metrics"][0]["revision"] == "seed1"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r["statistics_by_model"]["clip"].pop("valid_pairs"), "statistics_by_model/clip"),
        (lambda r: r["summary"].__setitem__("best_model", "clip"), "summary/best_model"),
        (lambda r: r["similarities_by_model"]["clip"].__setitem__("img00", "high"), "similarities_by_model/clip/img00"),
        (lambda r: r.pop("model_types"), "(top level)"),
        (lambda r: r["statistics_by_model"]["clip"].__setitem__("average_similarity", math.nan), "statistics_by_model/clip/average_similarity"),
    ],
)
def test_schema_rejects_broken_results_and_names_the_field(tmp_path, monkeypatch, mutate, field):
    toy_metrics.register(monkeypatch, "clip")
    results = score(tmp_path, ["clip"])
    broken = copy.deepcopy(results)
    mutate(broken)
    with pytest.raises(ResultsValidationError) as info:
        validate_results(broken, source="x/results.json")
    assert f"field '{field}'" in str(info.value) and "x/results.json" in str(info.value)


def test_unified_score_only_when_all_four_paper_metrics_ran(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "clip", "dinov2", "dinov3", "longclip", "siglip")
    three = score(tmp_path / "three", ["clip", "dinov2", "dinov3"])
    assert three["unified_score"] is None and three["extended_score"] is None

    four = score(tmp_path / "four", ["clip", "dinov2", "dinov3", "longclip"], broken=(2,))
    block = four["unified_score"]
    means = [four["statistics_by_model"][m]["average_similarity"] for m in ("clip", "dinov2", "dinov3", "longclip")]
    assert block["value"] == pytest.approx(100 * sum(means) / 4, rel=1e-12)
    assert block["metrics"] == ["clip", "dinov2", "dinov3", "longclip"] and block["scale"] == 100
    ci = block["ci95"]
    assert ci["low"] < block["value"] < ci["high"]  # the toy scores vary, so the interval has width
    assert ci["n"] == 6 and ci["level"] == 0.95
    assert four["extended_score"] is None

    five = score(tmp_path / "five", ["clip", "dinov2", "dinov3", "longclip", "siglip"])
    assert five["extended_score"]["metrics"][-1] == "siglip"
    assert five["unified_score"]["value"] != five["extended_score"]["value"]


def test_per_metric_confidence_intervals(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "clip")
    results = score(tmp_path, ["clip"], n=8)
    ci = results["confidence_intervals"]["clip"]
    stats = results["statistics_by_model"]["clip"]
    assert ci["mean"] == pytest.approx(stats["average_similarity"])
    assert stats["min_similarity"] <= ci["low"] < ci["mean"] < ci["high"] <= stats["max_similarity"]
    assert ci["n"] == 8 and ci["resamples"] >= 1000


def test_scores_csv_has_one_row_per_sample(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "clip", "toy-pair")
    results = score(tmp_path, ["clip", "toy-pair"], broken=(4,))
    with open(tmp_path / "out" / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["sample_id"] for row in rows] == list(results["similarities_by_model"]["clip"])
    assert list(rows[0]) == ["sample_id", "reference", "reconstruction", "clip", "toy-pair", "error"]
    for row in rows:
        expected = results["similarities_by_model"]["clip"][row["sample_id"]]
        if expected is None:
            assert row["clip"] == "" and "empty file" in row["error"]
        else:
            assert float(row["clip"]) == pytest.approx(expected, rel=1e-12) and row["error"] == ""
