"""The metric sanity report: degradations, the two properties, the degrade adapter, the run and the CLI."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
from PIL import Image, ImageFilter

import toy_metrics
from unified_bench.adapters.registry import build_adapter
from unified_bench.cli import main
from unified_bench.core.errors import ConfigError
from unified_bench.datasets.photos import photo_set
from unified_bench.results import load_results
from unified_bench.scoring import Pair, ScoringConfig, score_and_write
from unified_bench.tracks.sanity import (
    DEFAULT_LEVELS,
    DegradeAdapter,
    Degradation,
    analyse,
    centre_crop,
    degradations,
    format_levels,
    gaussian_noise,
    is_monotonic,
    noise_seed,
    parse_levels,
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
    assert data["engine_results"] == "run/results.json"
    (entry,) = data["metrics"]
    assert entry["metric"] == "toy-pair"
    assert set(entry["monotonic"]) == {"jpeg", "noise"}
    assert entry["monotonic"]["noise"] == {"holds": 2, "photos": 2, "failures": []}
    assert set(entry["separation_by_level"]) == {"jpeg_q90", "jpeg_q10", "noise_5", "noise_60"}
    assert report.metric("toy-pair").separation_by_level["jpeg_q90"].holds == 2
    results = load_results(tmp_path / "run")  # the engine's own results.json, schema-valid
    assert len(results["similarities_by_model"]["toy-pair"]) == 2 * 4 + 2
    assert "coins__vs__chelsea" in results["similarities_by_model"]["toy-pair"]
    markdown = (tmp_path / "sanity.md").read_text()
    assert "| toy-pair | 2/2 | 2/2 |" in markdown
    # one ordinary run of the degrade adapter on the photos-sanity dataset
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["model"] == "degrade" and info["dataset"] == "photos-sanity" and info["processed_this_session"] == 10
    assert info["executed"]["caption"]["prompt"] == "" and info["executed"]["caption"]["do_sample"] is False
    lines = [json.loads(line) for line in (tmp_path / "run" / "captions.jsonl").read_text().splitlines()]
    assert {line["sample_id"] for line in lines} == set(results["similarities_by_model"]["toy-pair"])
    assert all(line["image"] == f"images/{line['sample_id']}.png" and line["reference"] == f"refs/{line['sample_id']}.png" for line in lines)
    # the copies are temporary unless asked for
    assert not (tmp_path / "run" / "images").exists() and not (tmp_path / "run" / "refs").exists()
    # a second report into the same folder starts afresh; a folder that is not ours is refused
    run_sanity(tmp_path, metrics=["toy-pair"], photos=photos, levels={"jpeg": (90,)}, max_side=64, progress=False)
    assert len(load_results(tmp_path / "run")["similarities_by_model"]["toy-pair"]) == 2 + 2
    (tmp_path / "other" / "run").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a sanity-report run"):
        run_sanity(tmp_path / "other", metrics=["toy-pair"], photos=photos, levels={"jpeg": (90,)}, max_side=64, progress=False)


def expected_scores(photos, levels, max_side, metrics, work):
    """The report as it was computed before it went through the runner, rebuilt here from
    Pillow and numpy: working copies and degraded files written directly, pairs scored by the
    engine (JPEG copies are the .jpg files themselves)."""
    refs, copies = work / "refs", work / "copies"
    refs.mkdir(parents=True), copies.mkdir(parents=True)
    pairs, ref_paths = [], {}
    for photo in photos:
        image = photo.load()
        if max(image.size) > max_side:
            scale = max_side / max(image.size)
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
        ref_paths[photo.id] = refs / f"{photo.id}.png"
        image.save(ref_paths[photo.id])
        for family, values in levels.items():
            for level in values:
                label = Degradation(family, float(level)).label
                path = copies / f"{photo.id}__{label}.png"
                if family == "jpeg":
                    path = path.with_suffix(".jpg")
                    image.save(path, format="JPEG", quality=int(level))
                elif family == "blur":
                    image.filter(ImageFilter.GaussianBlur(level)).save(path)
                elif family == "noise":
                    seed = int.from_bytes(hashlib.sha256(f"{photo.id}:{label}".encode()).digest()[:8], "little")
                    pixels = np.asarray(image, dtype=np.float64)
                    noisy = pixels + np.random.default_rng(seed).normal(0.0, level, size=pixels.shape)
                    Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8)).save(path)
                else:
                    w, h = image.size
                    cw, ch = max(1, round(w * level)), max(1, round(h * level))
                    left, top = (w - cw) // 2, (h - ch) // 2
                    image.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BICUBIC).save(path)
                pairs.append(Pair(f"{photo.id}__{label}", ref_paths[photo.id], path))
    for photo in photos:
        for other in photos:
            if other.id != photo.id:
                pairs.append(Pair(f"{photo.id}__vs__{other.id}", ref_paths[photo.id], ref_paths[other.id]))
    outcome = score_and_write(pairs, ScoringConfig(metrics=list(metrics), use_cache=False, progress=False), work / "scores")
    return outcome.results["similarities_by_model"]


def test_run_gives_the_scores_of_directly_scored_files(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "toy-pair", "toy-embed")
    photos = photo_set(["coins", "chelsea", "camera"])
    metrics = ["toy-pair", "toy-embed", "psnr", "ssim"]
    report = run_sanity(tmp_path / "report", metrics=metrics, photos=photos, levels=TWO_LEVELS, max_side=48, progress=False)
    assert not report.errors and not report.failed_metrics
    got = load_results(tmp_path / "report" / "run")["similarities_by_model"]
    expected = expected_scores(photos, TWO_LEVELS, 48, metrics, tmp_path / "direct")
    assert set(got) == set(expected) == set(metrics)
    # pixel metrics: the same numbers; an embedding metric: float32 batches are composed in
    # another order (the run scores in sample-id order), which moves the 8th digit
    tolerance = {"toy-embed": 1e-6}
    for metric in metrics:
        assert set(got[metric]) == set(expected[metric]) and len(got[metric]) == 3 * 8 + 6
        for sample_id, value in expected[metric].items():
            assert got[metric][sample_id] == pytest.approx(value, rel=0, abs=tolerance.get(metric, 0.0)), (metric, sample_id)
    ids = [p.id for p in photos]
    for entry in report.metrics:  # and the report is the analysis of those scores
        direct = analyse(expected[entry.metric], ids, TWO_LEVELS, entry.metric, entry.unit)
        if entry.metric in tolerance:
            assert {f: c.holds for f, c in entry.monotonic.items()} == {f: c.holds for f, c in direct.monotonic.items()}
            assert entry.separation.holds == direct.separation.holds
        else:
            assert entry == direct


def test_degrade_adapter_contract():
    adapter = build_adapter("degrade", {"levels": "jpeg=90;crop=0.5"})
    assert isinstance(adapter, DegradeAdapter)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(20, 30, 3), dtype=np.uint8))
    other = Image.new("RGB", (16, 16), (1, 2, 3))
    ids = ["a__crop_50", "b__jpeg_q90", "a__vs__b"]
    captions = adapter.caption([image, other, image], prompt="describe", seeds=[0, 0, 0], sample_ids=ids)
    assert all(isinstance(c, str) and c.strip() for c in captions)
    crop, jpeg, unrelated = adapter.generate(captions, seeds=[0, 0, 0], size=(1024, 1024), sample_ids=ids)
    assert crop.tobytes() == centre_crop(image, 0.5).tobytes() and crop.size == (30, 20)
    assert jpeg.size == (16, 16) and unrelated is other
    with pytest.raises(ValueError, match="not captioned"):
        adapter.generate(["x"], seeds=[0], size=None, sample_ids=["a__crop_50"])  # each copy once
    with pytest.raises(ValueError, match="neither"):
        adapter.caption([image], prompt="", seeds=[0], sample_ids=["a__blur_3"])  # not among its levels
    adapter.caption([image], prompt="", seeds=[0], sample_ids=["a__vs__zzz"])
    with pytest.raises(ValueError, match="has not captioned"):
        adapter.generate(["x"], seeds=[0], size=None, sample_ids=["a__vs__zzz"])
    # honest settings: no instruction, no sampling, no model, and the size asked for is not used
    assert adapter.caption_settings("describe").prompt == "" and adapter.caption_settings("x").do_sample is False
    generation = adapter.generation_settings((1024, 1024))
    assert generation.width is None and generation.num_inference_steps == 0
    assert parse_levels(format_levels(DEFAULT_LEVELS)) == {k: tuple(float(v) for v in vs) for k, vs in DEFAULT_LEVELS.items()}
    assert parse_levels(format_levels({"crop": (1 / 3,)})) == {"crop": (1 / 3,)}
    with pytest.raises(ConfigError):
        parse_levels("rotate=90")


def test_cli_sanity_and_exit_codes(tmp_path, monkeypatch, capsys):
    toy_metrics.register(monkeypatch, "toy-pair", "toy-missing")
    main(["sanity", "--metrics", "toy-pair", "--photos", "coins,camera", "--max-side", "48", "--out", str(tmp_path / "ok"), "--keep-images"])
    out = capsys.readouterr().out
    assert "toy-pair" in out and "sanity.json" in out
    copies = len(degradations(DEFAULT_LEVELS))
    assert len(list((tmp_path / "ok" / "run" / "images").iterdir())) == 2 * copies + 2  # and both unrelated pairs
    assert len(list((tmp_path / "ok" / "run" / "refs").iterdir())) == 2 * copies + 2
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
