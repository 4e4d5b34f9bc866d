"""The tiny recipe's plumbing: sft and vae side by side, float16 export."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors import safe_open



def _digest(path, part=None):
    from uae_reference.model import UAEModel
    from uae_reference.trainer import state_digest

    model = UAEModel.from_pretrained(path)
    return state_digest(getattr(model, part) if part else model)


def _train_all(out, *extra):
    cmd = [
        sys.executable, "-m", "uae_reference.cli", "train", "--preset", "tiny", "--stage", "all", "--smoke",
        "--steps", "3", "--output-dir", str(out), "--num-threads", "1", "--no-progress", "--set", "train_samples=16", *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_side_by_side_sft_and_vae_equal_the_sequential_recipe(tmp_path):
    out = _train_all(tmp_path / "side")
    assert "vae" in out and (tmp_path / "side" / "vae" / "stage.log").is_file()  # the vae ran in a child process
    _train_all(tmp_path / "seq", "--no-concurrent")
    # the side process's vae/final holds the fresh encoder next to the trained VAE: compare the VAE
    assert _digest(tmp_path / "side" / "vae" / "final", "vae") == _digest(tmp_path / "seq" / "vae" / "final", "vae")
    for stage in ("sft", "decoder", "coldstart"):
        assert _digest(tmp_path / "side" / stage / "final") == _digest(tmp_path / "seq" / stage / "final"), stage


def test_export_stores_float16_and_loads_as_float32(tmp_path):
    from uae_reference.model import UAEModel, export_checkpoint
    from uae_reference.presets import build_tiny_model

    model = build_tiny_model(seed=0)
    src = model.save_pretrained(tmp_path / "src")
    dst = export_checkpoint(src, tmp_path / "shipped")
    files = sorted(dst.rglob("*.safetensors"))
    assert files and not (tmp_path / "shipped.tmp").exists()
    for file in files:
        with safe_open(str(file), "pt") as handle:
            assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}, file
    size = sum(f.stat().st_size for f in files)
    assert size < 0.6 * sum(f.stat().st_size for f in src.rglob("*.safetensors"))
    loaded = UAEModel.from_pretrained(dst)
    original = dict(model.named_parameters())
    for name, param in loaded.named_parameters():
        assert param.dtype == torch.float32
        torch.testing.assert_close(param, original[name].half().float(), rtol=0, atol=0)



@pytest.mark.slow
def test_bad_stage_arguments_fail_before_any_training(tmp_path):
    import time

    from uae_reference.config import stage_config
    from uae_reference.trainer import load_or_build_model
    from unified_bench.core.errors import WeightsNotFoundError

    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "uae_reference.cli", "rl", "train", "--stage", "g4u", "--export-stages",
         "--output-dir", str(tmp_path / "rl")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2 and "--export-stages needs --stage all" in proc.stderr + proc.stdout
    assert not (tmp_path / "rl").exists() and time.time() - started < 120
    from uae_reference.rl.checkpoints import stage_checkpoint

    config = stage_config("tiny", "decoder", init_from=str(stage_checkpoint("pre-rl")), vae_from=str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="vae stage's final"):
        load_or_build_model(config)


def _condition_change(model, base: str, variant: str) -> float:
    """Largest change of the LLM's last hidden states (the decoder's condition) between two
    captions, relative to their mean norm."""
    ids, mask = model.condition_token_ids([base, variant])
    with torch.no_grad():
        hidden = model.encoder.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return ((hidden[1] - hidden[0]).norm(dim=-1).max() / hidden[0].norm(dim=-1).mean()).item()


@pytest.mark.parametrize("stage", ["pre-rl", "u4g"])
def test_the_shipped_condition_tells_small_from_large(stage):
    """With tied word embeddings the tiny LLM gave "small" and "large" one input vector (no later
    word depends on size), the condition moved by 5% between them and the decoder drew sizes at
    chance. Untied, the size word must move the condition about as much as other words do."""
    from pathlib import Path

    from uae_reference.model import UAEModel

    root = Path(__file__).resolve().parents[1] / "uae_reference" / "checkpoints"
    model = UAEModel.from_pretrained(root / "uae-tiny" if stage == "u4g" else root / "uae-tiny-stages" / stage)
    assert not model.encoder.config.get_text_config().tie_word_embeddings
    base = "Two objects: a large red star in the top left and a small blue circle in the center."
    size = _condition_change(model, base, base.replace("large red", "small red"))
    colour = _condition_change(model, base, base.replace("large red", "large green"))
    assert size > 0.15 and size > 0.2 * colour, (size, colour)


@pytest.mark.slow
def test_the_shipped_vision_tower_sees_sizes():
    """The shipped captioner states sizes at chance; a linear probe on its vision tower's tokens
    reads them well above chance on held-out scenes, so the limit is in reading them out, not
    in seeing them (docs/reference-model.md). Shapes and colours are read perfectly."""
    from pathlib import Path

    from uae_reference.evaluate import test_samples, vision_probe
    from uae_reference.model import UAEModel

    root = Path(__file__).resolve().parents[1] / "uae_reference" / "checkpoints"
    model = UAEModel.from_pretrained(root / "uae-tiny-stages" / "pre-rl")
    report = vision_probe(model, test_samples(800, split="train"), test_samples(200, split="val"), attributes=("size", "color"))
    assert report["size"]["chance"] < 0.6 and report["size"]["mean"] > 0.75, report["size"]
    assert report["color"]["mean"] > 0.95, report["color"]
    with pytest.raises(ValueError, match="attributes are"):
        vision_probe(model, [], [], attributes=("position",))
