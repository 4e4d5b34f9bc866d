"""The metric sanity report: degradations, the two properties, the run and the CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

import toy_metrics
from unified_bench.cli import main
from unified_bench.datasets.photos import photo_set
from unified_bench.results import load_results
from unified_bench.tracks.sanity import (
    DEFAULT_LEVELS,
    Degradation,
    analyse,
    centre_crop,
    degradations,
    gaussian_noise,
    is_monotonic,
    noise_seed,
    run_sanity,
    separates,
    working_copy,
)

REDUCED_PHOTOS = ["chelsea", "coins", "china"]
TWO_LEVELS = {"jpeg": (90, 10), "blur": (1, 8), "noise": (5, 60), "crop": (0.9, 0.45)}


# ---------------------------------------------------------------- pure parts


def test_default_battery():
    labels = [d.label for d in degradations()]
    assert len(labels) == 17 and len(set(labels)) == 17
    assert labels[:5] == ["jpeg_q90", "jpeg_q70", "jpeg_q50", "jpeg_q30", "jpeg_q10"]
    assert "crop_45" in labels and "blur_8" in labels and "noise_60" in labels
    with pytest.raises(ValueError, match="unknown degradation"):
        degradations({"rotate": (90,)})


def test_monotonic_and_separation_rules():
    assert is_monotonic([0.9, 0.8, 0.8, 0.1])  # ties do not break it
    assert not is_monotonic([0.9, 0.95, 0.1])
    assert not is_monotonic([0.9, None, 0.1])  # an unscored copy cannot vouch for the metric
    assert separates([0.5, 0.6], [0.4, 0.49])
    assert not separates([0.5, 0.6], [0.5])  # strictly above
    assert not separates([0.5], [])


def test_noise_is_deterministic_by_name_and_crop_keeps_the_centre():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(40, 60, 3), dtype=np.uint8))
    seed = noise_seed("chelsea", "noise_5")
    assert seed == noise_seed("chelsea", "noise_5") != noise_seed("coins", "noise_5")
    a, b = gaussian_noise(image, 15, seed), gaussian_noise(image, 15, seed)
    assert a.tobytes() == b.tobytes()
    residual = np.asarray(a, np.float64) - np.asarray(image, np.float64)
    assert 10 < residual[(np.asarray(image) > 40) & (np.asarray(image) < 215)].std() < 20

    flat = Image.new("RGB", (60, 40), (0, 0, 0))
    flat.paste((255, 255, 255), (15, 10, 45, 30))  # white exactly where a 50% centre crop falls
    cropped = np.asarray(centre_crop(flat, 0.5))
    assert cropped.shape == (40, 60, 3)
    assert cropped[3:37, 3:57].min() > 250  # the centre now fills the frame
    assert np.asarray(centre_crop(flat, 0.9))[:2].max() == 0  # a mild crop keeps the black border

    big = Image.new("RGB", (1411, 700))
    assert working_copy(big, 512).size == (512, 254)
    assert working_copy(big, None) is big


def test_analyse_counts_properties_per_photo():
    levels = {"jpeg": (90, 10), "noise": (5, 60)}
    scores = {
        "a__jpeg_q90": 0.9, "a__jpeg_q10": 0.7, "a__noise_5": 0.8, "a__noise_60": 0.85,  # noise rises: not monotonic
        "b__jpeg_q90": 0.95, "b__jpeg_q10": 0.6, "b__noise_5": 0.9, "b__noise_60": 0.3,
        "a__vs__b": 0.5, "b__vs__a": 0.4,  # b's noise_60 copy (0.3) is below unrelated a (0.4)
    }
    entry = analyse(scores, ["a", "b"], levels, "m", "cosine")
    assert entry.monotonic["jpeg"].holds == 2 and entry.monotonic["noise"].holds == 1
    assert entry.monotonic["noise"].failures[0]["photo"] == "a"
    assert entry.separation.holds == 1
    assert entry.separation.failures == [
        {"photo": "b", "weakest_copy": "noise_60", "weakest_copy_score": 0.3, "closest_unrelated": "a", "closest_unrelated_score": 0.4}
    ]
    assert entry.separation_by_level["jpeg_q10"].holds == 2 and entry.separation_by_level["noise_60"].holds == 1
    assert entry.mean_by_level["jpeg_q90"] == pytest.approx(0.925)
    assert entry.mean_unrelated == pytest.approx(0.45) and entry.max_unrelated == 0.5


# ---------------------------------------------------------------- runs


def test_run_writes_report_and_engine_results(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "toy-pair")
    photos = photo_set(["coins", "chelsea"])
    report = run_sanity(
        tmp_path, metrics=["toy-pair"], photos=photos, levels={"jpeg": (90, 10), "noise": (5, 60)}, max_side=64, progress=False
    )
    data = json.loads((tmp_path / "sanity.json").read_text())
    assert data["photos"] == ["coins", "chelsea"] and data["max_side"] == 64
    (entry,) = data["metrics"]
    assert entry["metric"] == "toy-pair"
    assert set(entry["monotonic"]) == {"jpeg", "noise"}
    assert entry["monotonic"]["noise"] == {"holds": 2, "photos": 2, "failures": []}
    assert set(entry["separation_by_level"]) == {"jpeg_q90", "jpeg_q10", "noise_5", "noise_60"}
    assert report.metric("toy-pair").separation_by_level["jpeg_q90"].holds == 2
    results = load_results(tmp_path / "scores")  # the engine's own results.json, schema-valid
    assert len(results["similarities_by_model"]["toy-pair"]) == 2 * 4 + 2
    assert "coins__vs__chelsea" in results["similarities_by_model"]["toy-pair"]
    markdown = (tmp_path / "sanity.md").read_text()
    assert "| toy-pair | 2/2 | 2/2 |" in markdown
    assert not (tmp_path / "images").exists()  # degraded copies are temporary unless asked for


def test_cli_sanity_and_exit_codes(tmp_path, monkeypatch, capsys):
    toy_metrics.register(monkeypatch, "toy-pair", "toy-missing")
    main(["sanity", "--metrics", "toy-pair", "--photos", "coins,camera", "--max-side", "48", "--out", str(tmp_path / "ok"), "--keep-images"])
    out = capsys.readouterr().out
    assert "toy-pair" in out and "sanity.json" in out
    assert len(list((tmp_path / "ok" / "images" / "degraded").iterdir())) == 2 * len(degradations(DEFAULT_LEVELS))
    with pytest.raises(SystemExit) as exited:
        main(["sanity", "--metrics", "toy-pair,toy-missing", "--photos", "coins,camera", "--max-side", "48", "--out", str(tmp_path / "bad")])
    assert exited.value.code == 1
    assert "toy-missing did not run" in (tmp_path / "bad" / "sanity.md").read_text()
    with pytest.raises(SystemExit) as exited:
        main(["sanity", "--metrics", "toy-pair", "--photos", "coins,nope", "--out", str(tmp_path / "x")])
    assert exited.value.code == 2


@pytest.mark.slow
def test_offline_metrics_on_a_reduced_set(tmp_path):
    started = time.perf_counter()
    report = run_sanity(tmp_path, photos=photo_set(REDUCED_PHOTOS), levels=TWO_LEVELS, progress=False)
    elapsed = time.perf_counter() - started
    assert [m.metric for m in report.metrics] == ["effnet", "ssim", "psnr"] and not report.failed_metrics
    assert report.errors == []
    for entry in report.metrics:
        assert set(entry.monotonic) == set(TWO_LEVELS)
        for family, (weak, strong) in TWO_LEVELS.items():
            weak_label, strong_label = Degradation(family, weak).label, Degradation(family, strong).label
            # on average, the stronger degradation is the less similar one, for every metric
            assert entry.mean_by_level[weak_label] > entry.mean_by_level[strong_label], (entry.metric, family)
        assert entry.mean_by_level["jpeg_q90"] > entry.mean_unrelated
    assert report.metric("psnr").monotonic["noise"].holds == 3
    assert report.metric("effnet").separation.holds == 3
    assert report.metric("effnet").mean_by_level["jpeg_q90"] > 0.9
    print(f"reduced sanity run: {elapsed:.1f} s")


@pytest.mark.slow
def test_effnet_jpeg50_copy_beats_every_other_photo_on_the_full_set(tmp_path):
    """Issue acceptance 3, on all twelve photos with the real EfficientNet-Lite0 weights."""
    started = time.perf_counter()
    report = run_sanity(tmp_path, metrics=["effnet"], levels={"jpeg": (50,)}, progress=False)
    elapsed = time.perf_counter() - started
    entry = report.metric("effnet")
    assert len(report.photos) == 12 and report.errors == []
    assert entry.separation_by_level["jpeg_q50"].holds == 12, entry.separation_by_level["jpeg_q50"].failures
    assert entry.mean_by_level["jpeg_q50"] > entry.max_unrelated
    print(f"full-set effnet JPEG-50 run: {elapsed:.1f} s")
