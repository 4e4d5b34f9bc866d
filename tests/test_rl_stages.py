"""The Unified-GRPO stages on a real tiny UAE (random weights, built from the tiny preset's
configs and loaded through ``from_pretrained``): rollout/update consistency, the reference
policy, the reward, and a CI smoke run of G4U then U4G (issue 7, acceptance 4)."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from uae_reference.model import CaptionSample, UAEModel
from uae_reference.rl.config import G4UConfig, RewardSettings, U4GConfig, rl_config
from unified_bench.core.errors import ConfigError

SMOKE_SETS = dict(max_caption_tokens=12)  # a random encoder never says EOS: keep its captions short


def untrained_but_responsive(model):
    """The tiny preset starts its decoder DiT-style (adaptive-norm gates and output projection at
    zero: the decoder outputs a constant, and LoRA on its attention gets no gradient). A trained
    decoder is not like that; give the zero-initialised tensors small random values instead."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.decoder.parameters():
            if p.ndim and not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from uae_reference.presets import build_tiny_model

    path = tmp_path_factory.mktemp("uae") / "tiny"
    untrained_but_responsive(build_tiny_model(seed=0)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reward():
    from uae_reference.rl.rewards import ReconstructionReward

    return ReconstructionReward(RewardSettings(metric="effnet"))


@pytest.fixture(scope="module")
def data(tiny_checkpoint):
    from uae_reference.rl.rollout import load_prompts

    return load_prompts(UAEModel.from_pretrained(tiny_checkpoint), "train", 64)


# --- reward ---------------------------------------------------------------------------------------


def test_the_evaluation_oracle_cannot_be_a_reward():
    with pytest.raises(ConfigError, match="evaluation"):
        RewardSettings(metric="shapes-attr")
    with pytest.raises(ConfigError):
        G4UConfig(reward={"metric": "shapes-attr"})


@pytest.mark.slow
def test_reward_is_the_metrics_own_pair_score(reward, data):
    from uae_reference.model import tensor_to_images

    images = tensor_to_images(data.images[:3].float().div(127.5).sub(1.0))
    same = reward.score(images, images)
    assert torch.allclose(same, torch.ones(3), atol=1e-5)
    shifted = images[1:] + images[:1]
    scores = reward.score(shifted, images)
    from unified_bench.metrics import build_metric

    metric = build_metric("effnet")  # the benchmark's own metric, default memory layout
    expected = (metric.embed(shifted) * metric.embed(images)).sum(-1)
    assert torch.allclose(scores, expected, atol=1e-5)  # the reward runs it channels-last
    assert (scores < 0.999).all()


# --- reference policy and caption hygiene -----------------------------------------------------------


def test_adapters_disabled_gives_the_base_model_and_keeps_gradients():
    from uae_reference.lora import LoraSettings, add_lora
    from uae_reference.rl.rollout import ReferencePolicy

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    x = torch.randn(5, 8)
    base = net(x).detach()
    add_lora(net, LoraSettings(r=2, alpha=4), ("0", "2"))
    for name, p in net.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)  # a trained adapter: the policy differs from the base
    adapted = net(x).detach()
    assert not torch.allclose(adapted, base)
    reference = ReferencePolicy(net, use_adapters=True)
    with reference(net) as ref:
        assert torch.allclose(ref(x), base, atol=1e-6)
    assert torch.allclose(net(x), adapted)
    assert all(p.requires_grad for n, p in net.named_parameters() if "lora_" in n)
    copied = ReferencePolicy(torch.nn.Linear(3, 3), use_adapters=False)
    assert all(not p.requires_grad for p in copied._copy.parameters())


def test_captions_end_at_a_sampled_special_token(tiny_checkpoint):
    from uae_reference.rl.rollout import end_at_special_tokens

    model = UAEModel.from_pretrained(tiny_checkpoint)
    tok = model.tokenizer
    words = tok("a red circle", add_special_tokens=False)["input_ids"]
    pad_image = tok.convert_tokens_to_ids("<|image_pad|>")
    ids = torch.tensor([[*words, pad_image, words[0], model.eos_token_id], [*words, model.eos_token_id, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    sample = CaptionSample(["x", "y"], ids, mask, torch.zeros(2, 6), 1.0)
    out = end_at_special_tokens(model, sample)
    assert out.texts == ["a red circle", "a red circle"]  # every row re-decoded from its ids
    assert out.mask[0].tolist() == [1, 1, 1, 1, 0, 0]
    assert out.token_ids[0, 3].item() == model.eos_token_id
    assert end_at_special_tokens(model, CaptionSample(["y"], ids[1:], mask[1:], torch.zeros(1, 6), 1.0)).texts == ["y"]


# --- rollouts and the first update are consistent ------------------------------------------------------


def test_g4u_teacher_forcing_reproduces_the_sampling_log_probs(tiny_checkpoint, reward, data):
    from uae_reference.lora import LoraSettings
    from uae_reference.rl.g4u import g4u_loss, g4u_rollout
    from uae_reference.rl.grpo import group_advantages
    from uae_reference.rl.rollout import CAPTION_STREAM, ReferencePolicy, rollout_seed
    from uae_reference.rl.trainer import configure_trainable

    model = UAEModel.from_pretrained(tiny_checkpoint)
    config = G4UConfig(prompts_per_step=2, group_size=3, updates_per_step=1, reconstruction_steps=2, lora=LoraSettings(4, 8), **SMOKE_SETS)
    module, params = configure_trainable(model, config)
    assert params and all("lora_" in n for n, p in module.named_parameters() if p.requires_grad)
    rollout = g4u_rollout(model, ReferencePolicy(module, use_adapters=True), reward, data, [3, 7], config, step=0)
    assert rollout.rewards.shape == (2, 3) and torch.isfinite(rollout.rewards).all()
    # the generation's own log-probabilities (KV cache) agree with the teacher-forced pass
    seeds = [rollout_seed(config.seed, 0, i, g, CAPTION_STREAM) for i in [3, 7] for g in range(3)]
    raw = model.sample_captions(list(rollout.images), seeds=seeds, temperature=config.temperature, max_new_tokens=12)
    same = raw.token_ids.eq(rollout.token_ids) & rollout.mask.bool()
    assert same.sum() > 0
    assert torch.allclose(raw.logprobs[same], rollout.old_logprobs[same], atol=1e-4)
    # fresh LoRA: policy == reference, so the first update starts at ratio 1 and KL 0
    assert torch.allclose(rollout.ref_logprobs, rollout.old_logprobs, atol=1e-6)
    adv = group_advantages(rollout.rewards).flatten()
    out = g4u_loss(model, rollout, torch.arange(6), adv, config)
    assert out["ratio"].item() == pytest.approx(1.0, abs=1e-5)
    assert out["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_u4g_rescoring_a_stored_transition_gives_its_rollout_log_prob(tiny_checkpoint, reward, data):
    from uae_reference.lora import LoraSettings
    from uae_reference.rl.rollout import ReferencePolicy
    from uae_reference.rl.trainer import configure_trainable
    from uae_reference.rl.u4g import u4g_rollout, u4g_step_loss

    model = UAEModel.from_pretrained(tiny_checkpoint)
    config = U4GConfig(prompts_per_step=2, group_size=2, updates_per_step=1, sde_steps=3, lora=LoraSettings(4, 8))
    module, params = configure_trainable(model, config)
    rollout = u4g_rollout(model, reward, data, [1, 2], config, step=0)
    assert rollout.states.shape[:2] == (4, 4) and rollout.old_logprobs.shape == (4, 3)
    # members of a group share a caption but not their noise
    assert not torch.allclose(rollout.states[0, -1], rollout.states[1, -1])
    reference = ReferencePolicy(module, use_adapters=True)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    for k in range(3):
        out = u4g_step_loss(model, reference, rollout, torch.arange(4), k, adv, config)
        assert out["ratio"].item() == pytest.approx(1.0, abs=1e-5)
        assert out["kl"].item() == pytest.approx(0.0, abs=1e-8)
        assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.slow
def test_u4g_shared_initial_noise_starts_a_group_together_and_lets_it_diverge(tiny_checkpoint, reward, data):
    from uae_reference.rl.u4g import u4g_rollout

    model = UAEModel.from_pretrained(tiny_checkpoint)
    config = U4GConfig(prompts_per_step=2, group_size=3, updates_per_step=1, sde_steps=3, shared_initial_noise=True)
    shared = u4g_rollout(model, reward, data, [1, 2], config, step=0)
    start = shared.states[:, 0]
    assert torch.equal(start[0], start[1]) and torch.equal(start[0], start[2])  # one start per group
    assert not torch.allclose(start[0], start[3])  # groups start apart
    assert not torch.allclose(shared.states[0, 1], shared.states[1, 1])  # the SDE increments differ
    independent = u4g_rollout(model, reward, data, [1, 2], config.replace(shared_initial_noise=False), step=0)
    # the group's first member is the same trajectory either way; the others start elsewhere
    assert torch.equal(independent.states[0], shared.states[0]) and torch.equal(independent.states[3], shared.states[3])
    assert not torch.allclose(independent.states[1, 0], shared.states[1, 0])



def test_u4g_sde_window_is_the_only_randomness_and_the_only_trained_steps(tiny_checkpoint, reward, data):
    from uae_reference.rl.u4g import sde_window, u4g_rollout

    assert sde_window(U4GConfig(sde_steps=10), step=0) == list(range(9))  # no window: all but the last hop
    config = U4GConfig(
        prompts_per_step=2, group_size=3, updates_per_step=1, sde_steps=6, sde_window_size=2, sde_window_range=(1, 5), shared_initial_noise=True
    )
    windows = [sde_window(config, step) for step in range(20)]
    assert all(len(w) == 2 and w[1] == w[0] + 1 and 1 <= w[0] and w[1] < 5 for w in windows)
    assert len({w[0] for w in windows}) > 1 and windows == [sde_window(config, step) for step in range(20)]
    model = UAEModel.from_pretrained(tiny_checkpoint)
    rollout = u4g_rollout(model, reward, data, [1, 2], config, step=3)
    first, last = rollout.train_steps
    assert rollout.train_steps == windows[3]
    states = rollout.states  # [B * G, K + 1, ...]; a group shares its start, so it stays together until the window
    for k in range(first + 1):
        assert torch.equal(states[0, k], states[1, k]) and torch.equal(states[0, k], states[2, k])
    assert not torch.allclose(states[0, first + 1], states[1, first + 1])
    outside = [k for k in range(config.sde_steps) if k not in rollout.train_steps]
    assert torch.all(rollout.old_logprobs[:, outside] == 0) and torch.all(rollout.old_logprobs[:, [first, last]] != 0)
    # outside the window a step is the Euler step of the decoder's velocity
    k = last + 1
    with torch.no_grad():
        v = model.velocity(states[:, k], torch.tensor([rollout.sigmas[k]]), rollout.cond)
    euler = states[:, k] + (rollout.sigmas[k + 1] - rollout.sigmas[k]) * v
    assert torch.allclose(states[:, k + 1], euler, atol=1e-5)
    with pytest.raises(ConfigError):
        U4GConfig(sde_window_size=2, sde_window_range=(3, 3))

# --- the CI smoke run ------------------------------------------------------------------------------------


def _read_log(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_smoke_g4u_then_u4g(tiny_checkpoint, tmp_path):
    """A few steps of each stage: finite losses, the policy moves, logs and checkpoints are written."""
    from uae_reference.rl.trainer import train_rl_stage

    g4u = train_rl_stage(
        rl_config("tiny", "g4u", smoke=True, init_from=str(tiny_checkpoint), output_dir=str(tmp_path / "g4u"), **SMOKE_SETS),
        show_progress=False,
    )
    u4g = train_rl_stage(
        rl_config("tiny", "u4g", smoke=True, init_from=str(g4u.final_dir), output_dir=str(tmp_path / "u4g")),
        show_progress=False,
    )
    for result in (g4u, u4g):
        rows = _read_log(result.log_path)
        assert len(rows) == 3
        for row in rows:
            for key in ("loss", "reward", "kl", "clip_fraction", "caption_length", "attributes_per_object"):
                assert math.isfinite(float(row[key])), (result.stage, key, row[key])
        assert result.parameters_changed
        assert (result.output_dir / "curves.png").stat().st_size > 0
        assert (result.output_dir / "samples.jsonl").read_text().strip()
    # G4U changed the encoder only, U4G the decoder only (LoRA merged into plain weights)
    start, after_g4u, after_u4g = (UAEModel.from_pretrained(p) for p in (tiny_checkpoint, g4u.final_dir, u4g.final_dir))

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    assert not same(start.encoder, after_g4u.encoder) and same(start.decoder, after_g4u.decoder)
    assert same(after_g4u.encoder, after_u4g.encoder) and not same(after_g4u.decoder, after_u4g.decoder)
    assert same(start.projector, after_u4g.projector)


# --- bundled stages --------------------------------------------------------------------------------------


def test_uae_tiny_stage_argument_selects_a_bundled_stage(tiny_checkpoint, tmp_path, monkeypatch):
    import uae_reference.rl.checkpoints as checkpoints
    from uae_reference.adapter import UAETinyAdapter, UAETinyConfig
    from unified_bench.core.errors import WeightsNotFoundError

    monkeypatch.setattr(checkpoints, "BUNDLED", tmp_path / "uae-tiny")
    monkeypatch.setattr(checkpoints, "STAGES_DIR", tmp_path / "uae-tiny-stages")
    with pytest.raises(WeightsNotFoundError, match="rl train --stage all"):
        UAETinyAdapter(UAETinyConfig(stage="g4u"))
    with pytest.raises(ConfigError):
        checkpoints.stage_checkpoint("cold")
    # export: the pre-RL checkpoint may itself be the bundled one; it is staged before replacing
    checkpoints.export_stages(tiny_checkpoint, tiny_checkpoint, tiny_checkpoint)
    checkpoints.export_stages(tmp_path / "uae-tiny", tiny_checkpoint, tiny_checkpoint)
    for stage in ("pre-rl", "g4u", "u4g", "final"):
        assert (checkpoints.stage_checkpoint(stage) / "uae_config.json").is_file()
    adapter = UAETinyAdapter(UAETinyConfig(stage="pre-rl"))
    assert adapter.describe()["checkpoint"] == str(tmp_path / "uae-tiny-stages" / "pre-rl")
    with pytest.raises(ConfigError, match="not both"):
        UAETinyAdapter(UAETinyConfig(stage="g4u", checkpoint=str(tiny_checkpoint)))


def test_condition_anchor_is_zero_at_the_reference_and_pulls_lora_back(tiny_checkpoint):
    """G4U's anchor: the squared change of the LLM states the frozen decoder reads, with gradient to LoRA."""
    from uae_reference.lora import LoraSettings, add_lora
    from uae_reference.rl.g4u import condition_drift, condition_hidden
    from uae_reference.rl.rollout import ReferencePolicy

    model = UAEModel.from_pretrained(tiny_checkpoint)
    texts = ["two objects : a small red circle in the top left and a large blue star in the center.", "one object : a green square."]
    with torch.no_grad():
        before = condition_hidden(model, texts)[0]
    add_lora(model.encoder.model.language_model, LoraSettings(r=4, alpha=8), ("q_proj", "v_proj", "gate_proj"))
    assert condition_drift(model, texts, before).item() < 1e-10  # fresh LoRA (B = 0): nothing moved
    lora = [p for n, p in model.encoder.named_parameters() if "lora_B" in n]
    with torch.no_grad():
        for p in lora:
            p.normal_(std=0.05)
    drift = condition_drift(model, texts, before)
    assert drift.item() > 1e-6
    drift.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    with ReferencePolicy(model.encoder, use_adapters=True)(model.encoder), torch.no_grad():
        assert condition_drift(model, texts, before).item() < 1e-10  # the reference is the anchor
