"""The config-driven trainer: smoke runs of every stage (losses fall), resume, data sharding."""

from __future__ import annotations

import math

import pytest
import torch

from uae_reference.config import TrainConfig, field_docs, stage_config
from uae_reference.data import batch_indices, step_generator
from uae_reference.trainer import lr_lambda, read_log, train_stage


def _mean(values):
    return sum(values) / len(values)


def test_batches_are_seeded_per_step_and_disjoint_across_ranks():
    a = batch_indices(100, 8, seed=0, step=3, rank=0, world_size=2)
    b = batch_indices(100, 8, seed=0, step=3, rank=1, world_size=2)
    assert len(a) == len(b) == 8 and not set(a) & set(b)
    assert a == batch_indices(100, 8, seed=0, step=3, rank=0, world_size=2)
    assert a != batch_indices(100, 8, seed=0, step=4, rank=0, world_size=2)
    # the global batch depends on (seed, step) only: one process with the doubled batch sees the same samples
    assert sorted(a + b) == sorted(batch_indices(100, 16, seed=0, step=3))
    x = torch.rand(3, generator=step_generator(0, 3, rank=0))
    assert torch.equal(x, torch.rand(3, generator=step_generator(0, 3, rank=0)))
    assert not torch.equal(x, torch.rand(3, generator=step_generator(0, 3, rank=1)))
    with pytest.raises(ValueError):
        batch_indices(10, 8, seed=0, step=0, world_size=2)


def test_sft_long_first_steps_is_a_long_captions_first_curriculum():
    from uae_reference.data import ShapesTrainingSet
    from uae_reference.stages import make_batch

    data = ShapesTrainingSet.load("train", 16, 64)
    plain = stage_config("tiny", "sft", sft_long_fraction=0.2, sft_long_first_steps=0)
    curriculum = plain.replace(sft_long_first_steps=5)
    indices = list(range(64))

    def targets(config, step):
        return make_batch(data, indices, config, step_generator(0, step), step).target_captions

    longs = [data.long_caption(i, step_generator(0, 0)) for i in indices]
    assert targets(curriculum, 4) == longs  # before the switch: every target is the long caption
    mixed = targets(plain, 5)
    assert targets(curriculum, 5) == mixed  # from the switch on: the plain mixture, the same draws
    assert 0 < sum(t == long for t, long in zip(mixed, longs)) < len(indices)


def test_learning_rate_schedule():
    lr = lambda s: lr_lambda(s, warmup=10, total=110, min_ratio=0.1)  # noqa: E731
    assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0) and lr(60) == pytest.approx(0.55)
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)


def test_every_config_field_is_documented():
    from dataclasses import fields

    docs = field_docs(TrainConfig)
    assert all(docs.get(f.name) for f in fields(TrainConfig)), [f.name for f in fields(TrainConfig) if f.name not in docs]
    with pytest.raises(ValueError):
        TrainConfig(stage="pretrain")


@pytest.mark.slow
def test_smoke_recipe_losses_fall(tmp_path):
    """The four tiny stages, chained as the recipe runs them, on 16 samples: every loss falls."""
    previous = ""
    settings = dict(train_samples=16, batch_size=8, save_every=0, num_threads=1)
    steps = {"sft": 20, "vae": 20, "decoder": 20, "coldstart": 10}
    for stage in ("sft", "vae", "decoder", "coldstart"):
        # the cold start's terms at equal weight: the preset weights flow 10x (it keeps the decoder
        # from drifting over 150 steps), which in 10 steps can hold the semantic term still
        extra = {"flow_weight": 1.0} if stage == "coldstart" else {}
        config = stage_config(
            "tiny", stage, smoke=True, output_dir=str(tmp_path / stage), init_from=previous, steps=steps[stage],
            learning_rate=3e-3, **settings, **extra,
        )
        result = train_stage(config, show_progress=False)
        rows = read_log(result.log_path)
        assert [r["step"] for r in rows] == list(range(1, steps[stage] + 1))
        losses = [r["loss"] for r in rows]
        assert all(math.isfinite(v) for v in losses)
        assert (result.final_dir / "uae_config.json").is_file() and (tmp_path / stage / "log.png").stat().st_size > 0
        if stage == "coldstart":
            # per-step cold-start losses are noisy (sampled captions, random noise levels): compare
            # the same batch, noise and captions before and after the stage instead
            assert {"semantic", "flow", "caption"} <= set(rows[0])
            assert not any("lora" in k for k in _keys(result.final_dir))  # LoRA merged before saving
            before, after = (_fixed_batch_loss(path, config) for path in (previous, result.final_dir))
            assert all(after[k] < before[k] for k in ("loss", "semantic", "flow", "caption")), (before, after)
        else:
            assert _mean(losses[-3:]) < 0.9 * _mean(losses[:3]), (stage, losses)
        if stage == "vae":  # the latents were rescaled to unit scale for the decoder
            from diffusers import AutoencoderKL

            vae_config = AutoencoderKL.from_pretrained(result.final_dir / "vae").config
            assert vae_config.scaling_factor != 1.0 and vae_config.shift_factor != 0.0
        previous = str(result.final_dir)


def _fixed_batch_loss(checkpoint, config) -> dict[str, float]:
    from uae_reference.data import ShapesTrainingSet
    from uae_reference.model import UAEModel
    from uae_reference.semantic import build_semantic_embedder
    from uae_reference.stages import coldstart_step_loss, make_batch

    model = UAEModel.from_pretrained(checkpoint)
    data = ShapesTrainingSet.load(
        "train", model.settings.image_size, config.train_samples, encoder_size=model.settings.encoder_image_size
    )
    batch = make_batch(data, list(range(8)), config, step_generator(123, 0), 0)
    semantic = build_semantic_embedder("effnet", resolution=config.semantic_resolution)
    with torch.no_grad():
        losses = coldstart_step_loss(model, batch, config, step_generator(123, 1), semantic)
    return {k: float(v) for k, v in losses.items()}


def _keys(checkpoint):
    from safetensors import safe_open

    keys = []
    for file in checkpoint.rglob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            keys += list(handle.keys())
    return keys


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    """Stopping after a saved step and rerunning gives the same weights as an uninterrupted run."""
    from uae_reference.model import UAEModel

    base = dict(train_samples=16, batch_size=4, steps=6, save_every=3, num_threads=1)
    straight = stage_config("tiny", "decoder", smoke=True, output_dir=str(tmp_path / "a"), **base)
    train_stage(straight, show_progress=False)

    resumed = stage_config("tiny", "decoder", smoke=True, output_dir=str(tmp_path / "b"), **base)

    def stop(step, row):
        if step == 4:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_stage(resumed, show_progress=False, on_step=stop)
    assert (tmp_path / "b" / "state" / "step.json").is_file()
    train_stage(resumed, show_progress=False)
    a = UAEModel.from_pretrained(tmp_path / "a" / "final").decoder.state_dict()
    b = UAEModel.from_pretrained(tmp_path / "b" / "final").decoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_log(tmp_path / "b" / "log.csv")] == list(range(1, 7))


def test_a_default_thread_stage_after_a_one_thread_stage_gets_the_default_back(tmp_path, monkeypatch):
    """The recipe runs sft with one thread (vae beside it), then the decoder in the same process:
    ``num_threads=0`` must restore torch's default, not inherit the earlier stage's one thread."""
    import uae_reference.trainer as trainer

    before = torch.get_num_threads()
    monkeypatch.setattr(trainer, "DEFAULT_NUM_THREADS", 3)  # distinct from 1 on any machine
    settings = dict(train_samples=8, batch_size=4, save_every=0, steps=1)
    try:
        train_stage(stage_config("tiny", "vae", smoke=True, output_dir=str(tmp_path / "a"), num_threads=1, **settings), show_progress=False)
        assert torch.get_num_threads() == 1
        train_stage(stage_config("tiny", "vae", smoke=True, output_dir=str(tmp_path / "b"), num_threads=0, **settings), show_progress=False)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
