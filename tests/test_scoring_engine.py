"""The scoring engine on real files: pairing, batching, the reference-embedding cache, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

import toy_metrics
from unified_bench.cli import main
from unified_bench.scoring import ScoringConfig, match_pairs, score_folders


def noise_image(seed: int, size: tuple[int, int] = (24, 20)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def touch_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(seed).save(path)
    return path


# ---------------------------------------------------------------- pairing


def test_pairing_by_stem_recon_prefix_and_unmatched(tmp_path):
    refs, recons = tmp_path / "refs", tmp_path / "images"
    for name in ("a.png", "b.jpg", "c.png", "lonely_ref.png", "recon_z.png", "nested/e.png"):
        touch_image(refs / name)
    for name in (
        "a.png",  # same stem
        "recon_a.png",  # 'a' is already taken by a.png: unmatched, never scored twice
        "recon_b.png",  # official prefix, other extension on the reference side
        "c.webp",  # same stem, other extension
        "recon_z.png",  # a reference literally named recon_z: exact stem wins over the prefix rule
        "orphan.png",
        "deep/er/e.png",  # folders are searched recursively on both sides
    ):
        touch_image(recons / name)
    (recons / "notes.txt").write_text("not an image")
    (refs / "README.md").write_text("not an image")

    pairing = match_pairs(recons, refs)
    matched = {p.sample_id: (p.reference.relative_to(refs).as_posix(), p.reconstruction.relative_to(recons).as_posix()) for p in pairing.pairs}
    assert matched == {
        "a": ("a.png", "a.png"),
        "b": ("b.jpg", "recon_b.png"),
        "c": ("c.png", "c.webp"),
        "e": ("nested/e.png", "deep/er/e.png"),
        "recon_z": ("recon_z.png", "recon_z.png"),
    }
    assert [Path(p).name for p in pairing.unmatched_images] == ["orphan.png", "recon_a.png"]
    assert [Path(p).name for p in pairing.unmatched_refs] == ["lonely_ref.png"]


def test_two_files_with_one_stem_are_not_both_scored(tmp_path):
    touch_image(tmp_path / "refs" / "x.png")
    touch_image(tmp_path / "refs" / "x.jpg")
    touch_image(tmp_path / "images" / "x.png")
    touch_image(tmp_path / "images" / "x.bmp")
    pairing = match_pairs(tmp_path / "images", tmp_path / "refs")
    assert [p.sample_id for p in pairing.pairs] == ["x"]
    assert len(pairing.unmatched_images) == 1 and len(pairing.unmatched_refs) == 1


def test_cli_lists_unmatched_files(tmp_path, monkeypatch, capsys):
    toy_metrics.register(monkeypatch, "toy-pair")
    touch_image(tmp_path / "refs" / "a.png", 1)
    touch_image(tmp_path / "refs" / "only_ref.png", 2)
    touch_image(tmp_path / "images" / "recon_a.png", 1)
    touch_image(tmp_path / "images" / "only_image.png", 3)
    out = tmp_path / "out"
    main(["score", "--images", str(tmp_path / "images"), "--refs", str(tmp_path / "refs"), "--out", str(out), "--metrics", "toy-pair"])
    err = capsys.readouterr().err.replace("\n", "")  # rich wraps long paths
    assert str(tmp_path / "images" / "only_image.png") in err and str(tmp_path / "refs" / "only_ref.png") in err
    results = json.loads((out / "results.json").read_text())
    assert results["similarities_by_model"]["toy-pair"] == {"a": pytest.approx(1.0)}
    assert [Path(p).name for p in results["unmatched"]["images"]] == ["only_image.png"]
    assert [Path(p).name for p in results["unmatched"]["refs"]] == ["only_ref.png"]


# ---------------------------------------------------------------- embedding engine and cache


@pytest.fixture(params=[False, True], ids=["decode-first", "streaming"])
def prefetch(request) -> bool:
    """The engine's two paths: every file decoded before the first metric (the CPU default),
    or decoding streamed into the first metric's preprocessing pipeline (the GPU default)."""
    return request.param


def make_run(root: Path, n: int = 5) -> tuple[Path, Path]:
    """n references; reconstruction i is reference i with a little noise (0 has identical
    pixels, written with other PNG settings so that its file differs from the reference's)."""
    refs, recons = root / "refs", root / "images"
    for i in range(n):
        ref = noise_image(i)
        touch_image(refs / f"s{i}.png", i)
        noisy = np.asarray(ref, np.int16) + np.random.default_rng(100 + i).integers(-20 * i, 20 * i + 1, size=(20, 24, 3))
        recons.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(recons / f"s{i}.png", compress_level=1)
    assert (refs / "s0.png").read_bytes() != (recons / "s0.png").read_bytes()
    return recons, refs


def run(recons: Path, refs: Path, out: Path, cache: Path | None, **config) -> dict:
    cfg = ScoringConfig(
        metrics=config.pop("metrics", ["toy-embed"]),
        progress=False,
        cache_dir=cache,
        use_cache=cache is not None,
        **config,
    )
    score_folders(recons, refs, out, cfg)
    return json.loads((out / "results.json").read_text())


def test_identical_images_score_one_and_batching_changes_nothing(tmp_path, monkeypatch, prefetch):
    toy_metrics.register(monkeypatch, "toy-embed")
    recons, refs = make_run(tmp_path, 7)
    one = run(recons, refs, tmp_path / "b1", None, batch_size=1, prefetch=prefetch)["similarities_by_model"]["toy-embed"]
    many = run(recons, refs, tmp_path / "b3", None, batch_size=3, prefetch=prefetch)["similarities_by_model"]["toy-embed"]
    assert one["s0"] == pytest.approx(1.0, abs=1e-6)
    assert one == pytest.approx(many, abs=1e-6)
    assert one["s6"] < one["s1"] < 1.0  # more noise, lower similarity: the toy metric is not constant
    assert toy_metrics.ToyEmbedding.calls == [1] * 14 + [3, 3, 1] * 2


def test_second_run_encodes_only_reconstructions_and_scores_identically(tmp_path, monkeypatch, prefetch):
    toy_metrics.register(monkeypatch, "toy-embed")
    recons, refs = make_run(tmp_path, 5)
    cache = tmp_path / "cache"
    cold = run(recons, refs, tmp_path / "cold", cache, batch_size=4, prefetch=prefetch)
    assert sum(toy_metrics.ToyEmbedding.calls) == 10  # 5 references + 5 reconstructions
    (cache_file,) = (cache / "ref_embeddings").glob("toy-embed-*.safetensors")
    assert len(load_file(str(cache_file))) == 5

    toy_metrics.ToyEmbedding.calls.clear()
    warm = run(recons, refs, tmp_path / "warm", cache, batch_size=4, prefetch=prefetch)
    assert sum(toy_metrics.ToyEmbedding.calls) == 5  # reconstructions only
    assert warm["similarities_by_model"] == cold["similarities_by_model"]

    no_cache = run(recons, refs, tmp_path / "none", None, batch_size=4, prefetch=prefetch)
    assert no_cache["similarities_by_model"] == cold["similarities_by_model"]


def test_cache_is_keyed_by_reference_bytes(tmp_path, monkeypatch, prefetch):
    toy_metrics.register(monkeypatch, "toy-embed")
    recons, refs = make_run(tmp_path, 4)
    cache = tmp_path / "cache"
    before = run(recons, refs, tmp_path / "r1", cache, prefetch=prefetch)["similarities_by_model"]["toy-embed"]

    noise_image(99).save(refs / "s2.png")  # new content under the same name
    toy_metrics.ToyEmbedding.calls.clear()
    after = run(recons, refs, tmp_path / "r2", cache, prefetch=prefetch)["similarities_by_model"]["toy-embed"]
    assert sum(toy_metrics.ToyEmbedding.calls) == 4 + 1  # reconstructions + the changed reference
    assert after["s2"] != pytest.approx(before["s2"], abs=1e-3)
    assert {k: v for k, v in after.items() if k != "s2"} == {k: v for k, v in before.items() if k != "s2"}

    # Renaming a reference without changing its bytes does not re-encode it.
    (refs / "s3.png").rename(refs / "t3.png")
    (recons / "s3.png").rename(recons / "t3.png")
    toy_metrics.ToyEmbedding.calls.clear()
    renamed = run(recons, refs, tmp_path / "r3", cache, prefetch=prefetch)["similarities_by_model"]["toy-embed"]
    assert sum(toy_metrics.ToyEmbedding.calls) == 4
    assert renamed["t3"] == before["s3"]


def test_cache_is_keyed_by_checkpoint(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "toy-embed")
    recons, refs = make_run(tmp_path, 3)
    cache = tmp_path / "cache"
    run(recons, refs, tmp_path / "r1", cache)
    toy_metrics.ToyEmbedding.calls.clear()
    run(recons, refs, tmp_path / "r2", cache, checkpoints={"toy-embed": "other-checkpoint"})
    assert sum(toy_metrics.ToyEmbedding.calls) == 6  # another checkpoint: nothing reused
    assert len(list((cache / "ref_embeddings").glob("toy-embed-*.safetensors"))) == 2


def test_identical_reference_bytes_are_encoded_once(tmp_path, monkeypatch, prefetch):
    toy_metrics.register(monkeypatch, "toy-embed")
    for seed, name in enumerate(("a", "b", "c")):
        touch_image(tmp_path / "refs" / f"{name}.png", 5)  # three copies of one file
        touch_image(tmp_path / "images" / f"{name}.png", 10 + seed)
    scores = run(tmp_path / "images", tmp_path / "refs", tmp_path / "out", None, prefetch=prefetch)["similarities_by_model"]["toy-embed"]
    assert sum(toy_metrics.ToyEmbedding.calls) == 1 + 3
    assert len(set(scores.values())) == 3


def test_repeated_reconstruction_files_are_encoded_once(tmp_path, monkeypatch, prefetch):
    """A file already embedded (as a reference or another reconstruction) is reused."""
    toy_metrics.register(monkeypatch, "toy-embed")
    refs, recons = tmp_path / "refs", tmp_path / "images"
    for i, name in enumerate(("p", "q", "r")):
        touch_image(refs / f"{name}.png", i)
    touch_image(recons / "p.png", 1)  # the same bytes as reference q
    touch_image(recons / "q.png", 9)
    touch_image(recons / "r.png", 9)  # the same bytes as reconstruction q
    scores = run(recons, refs, tmp_path / "out", None, prefetch=prefetch)["similarities_by_model"]["toy-embed"]
    assert sum(toy_metrics.ToyEmbedding.calls) == 3 + 1  # three references, one new reconstruction

    toy_metrics.ToyEmbedding.calls.clear()
    alone = run(recons, refs, tmp_path / "out1", None, batch_size=1, prefetch=prefetch)["similarities_by_model"]["toy-embed"]
    assert alone == pytest.approx(scores, abs=1e-6)  # batch size 1: same embeddings up to float32 rounding
    metric = toy_metrics.ToyEmbedding()
    q_ref, p_ref = metric.embed([noise_image(1)]), metric.embed([noise_image(0)])
    assert scores["p"] == pytest.approx(float((q_ref @ p_ref.T).item()), abs=1e-6)


def test_corrupt_cache_file_is_a_lost_speed_up_not_an_error(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "toy-embed")
    recons, refs = make_run(tmp_path, 4)
    cache = tmp_path / "cache"
    clean = run(recons, refs, tmp_path / "r1", cache)
    (cache_file,) = (cache / "ref_embeddings").glob("*.safetensors")
    for garbage in (b"", b"\x00" * 7, b"not a safetensors file at all" * 10, cache_file.read_bytes()[:40]):
        cache_file.write_bytes(garbage)
        toy_metrics.ToyEmbedding.calls.clear()
        again = run(recons, refs, tmp_path / "r2", cache)
        assert again["similarities_by_model"] == clean["similarities_by_model"]
        assert sum(toy_metrics.ToyEmbedding.calls) == 8  # everything re-encoded
        assert len(load_file(str(cache_file))) == 4  # and the cache rewritten whole


def test_unwritable_cache_does_not_fail_the_run(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "toy-embed")
    recons, refs = make_run(tmp_path, 3)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")  # fails even for root
    with pytest.warns(UserWarning, match="cache not written"):
        results = run(recons, refs, tmp_path / "out", blocker)
    assert results["errors"] == []
    assert results["similarities_by_model"]["toy-embed"]["s0"] == pytest.approx(1.0, abs=1e-6)


def test_one_bad_sample_does_not_sink_its_batch(tmp_path, monkeypatch, prefetch):
    toy_metrics.register(monkeypatch, "toy-fragile")
    recons, refs = make_run(tmp_path, 4)
    Image.new("RGB", (1, 1)).save(recons / "s1.png")
    results = run(recons, refs, tmp_path / "out", None, metrics=["toy-fragile"], batch_size=4, prefetch=prefetch)
    scores = results["similarities_by_model"]["toy-fragile"]
    assert scores["s1"] is None and all(scores[k] is not None for k in ("s0", "s2", "s3"))
    (error,) = results["errors"]
    assert error == {"sample_id": "s1", "stage": "metric", "message": "image smaller than 2x2", "metric": "toy-fragile"}


def test_missing_weights_skip_one_metric_and_exit_1(tmp_path, monkeypatch, capsys):
    toy_metrics.register(monkeypatch, "toy-embed", "toy-missing")
    recons, refs = make_run(tmp_path, 2)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["score", "--images", str(recons), "--refs", str(refs), "--out", str(out), "--metrics", "toy-missing,toy-embed", "--no-cache"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "toy-missing did not run" in err and "--checkpoint toy-missing=PATH" in err and "Traceback" not in err
    results = json.loads((out / "results.json").read_text())
    assert results["model_types"] == ["toy-embed"]
    assert results["run"]["scoring"]["metric_failures"][0]["metric"] == "toy-missing"


def test_metrics_run_one_at_a_time(tmp_path, monkeypatch):
    """Each backbone is closed before the next is built (peak memory ~ one backbone)."""
    toy_metrics.register(monkeypatch, "clip", "dinov2")
    events: list[str] = []
    for cls in (toy_metrics.ToyClip, toy_metrics.ToyDinov2):
        original_init = cls.__init__
        monkeypatch.setattr(cls, "__init__", lambda self, *a, _i=original_init, **k: (events.append(f"build {self.name}"), _i(self, *a, **k))[1])
        monkeypatch.setattr(cls, "close", lambda self: events.append(f"close {self.name}"))
    recons, refs = make_run(tmp_path, 2)
    run(recons, refs, tmp_path / "out", None, metrics=["clip", "dinov2"])
    assert events == ["build clip", "close clip", "build dinov2", "close dinov2"]


def test_every_copy_of_a_failing_file_gets_its_own_error(tmp_path, monkeypatch, prefetch):
    # Two references with the same (unscorable) bytes: the shared embedding fails, and each
    # sample must say so instead of silently having no score.
    toy_metrics.register(monkeypatch, "toy-fragile")
    (tmp_path / "refs").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (1, 1), (9, 9, 9)).save(tmp_path / "refs" / f"{name}.png")
        touch_image(tmp_path / "images" / f"{name}.png", 3)
    touch_image(tmp_path / "refs" / "c.png", 4)
    touch_image(tmp_path / "images" / "c.png", 4)
    results = run(tmp_path / "images", tmp_path / "refs", tmp_path / "out", None, metrics=["toy-fragile"], prefetch=prefetch)
    assert sorted(err["sample_id"] for err in results["errors"]) == ["a", "b"]
    assert results["similarities_by_model"]["toy-fragile"]["c"] == pytest.approx(1.0, abs=1e-6)
