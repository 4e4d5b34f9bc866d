"""SSIM and PSNR on inputs whose answer is known in closed form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

import tiny_models
from unified_bench.metrics import PairInput, build_metric
from unified_bench.metrics.pixel import PSNR_CAP_DB, SSIM_WINDOW, psnr_db, ssim
from unified_bench.scoring import ScoringConfig, score_folders

C1 = (0.01 * 255) ** 2  # SSIM's luminance stabiliser for data_range 255


def pair(reference: Image.Image, reconstruction: Image.Image, sample_id: str = "x") -> PairInput:
    return PairInput(sample_id, reference, reconstruction)


def array_image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint8), "RGB")


def test_identical_images():
    photo = tiny_models.photo("coffee", 0.25)
    ssim_score, = build_metric("ssim").score_pairs([pair(photo, photo.copy())])
    psnr_score, = build_metric("psnr").score_pairs([pair(photo, photo.copy())])
    assert ssim_score.value == pytest.approx(1.0, abs=1e-12) and ssim_score.error is None
    assert psnr_score.value == PSNR_CAP_DB == 100.0


def test_psnr_of_a_known_error_level():
    """Every channel value off by exactly +-d (no clipping): MSE = d^2, PSNR = 10 log10(255^2 / d^2)."""
    rng = np.random.default_rng(0)
    base = rng.integers(20, 236, (48, 64, 3))
    signs = rng.choice([-1, 1], size=base.shape)
    for d in (1, 5, 17):
        noisy = base + d * signs
        (score,) = build_metric("psnr").score_pairs([pair(array_image(base), array_image(noisy))])
        assert score.value == pytest.approx(10 * math.log10(255**2 / d**2), abs=1e-9)
    assert build_metric("psnr").unit == "db"


def test_psnr_cap_applies_to_near_identical_images():
    base = np.full((256, 256, 3), 128)
    nearly = base.copy()
    nearly[0, 0, 0] += 1  # MSE = 1/196608 -> 10 log10(255^2 * 196608) ~ 110.9 dB
    assert psnr_db(base, nearly) == PSNR_CAP_DB
    assert psnr_db(base, nearly, cap=1000.0) == pytest.approx(10 * math.log10(255**2 * base.size), abs=1e-9)


def test_ssim_of_constant_images_matches_formula():
    """Flat images have zero variance, so SSIM reduces to its luminance term (2ab + C1)/(a^2 + b^2 + C1)."""
    a, b = 100.0, 140.0
    reference = array_image(np.full((32, 40, 3), a))
    reconstruction = array_image(np.full((32, 40, 3), b))
    (score,) = build_metric("ssim").score_pairs([pair(reference, reconstruction)])
    assert score.value == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), abs=1e-9)


def test_ssim_falls_with_noise_and_reconstruction_is_resized():
    photo = tiny_models.photo("astronaut", 0.25)  # 128 x 128
    rng = np.random.default_rng(1)
    pixels = np.asarray(photo).astype(np.int16)
    light = np.clip(pixels + rng.normal(0, 5, pixels.shape), 0, 255)
    heavy = np.clip(pixels + rng.normal(0, 40, pixels.shape), 0, 255)
    upscaled = photo.resize((256, 256), Image.Resampling.BICUBIC)  # resized back to 128 before scoring
    scores = build_metric("ssim").score_pairs(
        [pair(photo, array_image(light)), pair(photo, array_image(heavy)), pair(photo, upscaled)]
    )
    light_s, heavy_s, resized_s = (s.value for s in scores)
    assert 1.0 > light_s > heavy_s > 0.0
    assert resized_s > 0.9


def test_image_smaller_than_window_is_a_pair_error():
    tiny = array_image(np.full((SSIM_WINDOW - 3, 30, 3), 50))
    ok_pair = pair(tiny_models.photo("coffee", 0.1), tiny_models.photo("coffee", 0.1), "ok")
    ssim_scores = build_metric("ssim").score_pairs([pair(tiny, tiny, "tiny"), ok_pair])
    assert ssim_scores[0].value is None and "smaller than the 11x11 SSIM window" in ssim_scores[0].error
    assert ssim_scores[1].value == pytest.approx(1.0)
    (psnr_score,) = build_metric("psnr").score_pairs([pair(tiny, tiny)])
    assert psnr_score.value == PSNR_CAP_DB  # PSNR has no window
    with pytest.raises(ValueError):
        ssim(np.zeros((5, 5, 3), np.uint8), np.zeros((5, 5, 3), np.uint8))


def test_pixel_metrics_through_the_engine(tmp_path):
    refs, recons = tmp_path / "refs", tmp_path / "images"
    refs.mkdir()
    recons.mkdir()
    photo = tiny_models.photo("chelsea", 0.2)
    photo.save(refs / "same.png")
    photo.save(recons / "same.png")
    photo.save(refs / "small.png")
    photo.resize((45, 30)).save(recons / "small.png")  # the reconstruction is resized up
    array_image(np.full((6, 6, 3), 9)).save(refs / "dot.png")
    array_image(np.full((6, 6, 3), 9)).save(recons / "dot.png")
    config = ScoringConfig(metrics=["ssim", "psnr"], cache_dir=tmp_path / "cache", progress=False)
    outcome = score_folders(recons, refs, tmp_path / "out", config)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    ssim_values = results["similarities_by_model"]["ssim"]
    psnr_values = results["similarities_by_model"]["psnr"]
    assert ssim_values["same"] == pytest.approx(1.0) and psnr_values["same"] == PSNR_CAP_DB
    assert 0.0 < ssim_values["small"] < 1.0 and 0.0 < psnr_values["small"] < PSNR_CAP_DB
    assert ssim_values["dot"] is None and psnr_values["dot"] == PSNR_CAP_DB
    assert [(e.sample_id, e.metric) for e in outcome.report.errors] == [("dot", "ssim")]
    assert results["units"]["psnr"] == "db"
