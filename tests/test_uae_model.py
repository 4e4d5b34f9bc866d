"""The reference UAE model on its tiny configs: real Qwen2.5-VL, projector and SD3 classes."""

from __future__ import annotations

import pytest
import torch

from uae_reference.model import UAEModel, first_eos_mask, tensor_to_images
from uae_reference.presets import TINY_DECODER_CONFIG, TINY_LLM_WIDTH, build_tiny_model
from uae_reference.projector import UAEProjector, masked_mean

CAPTIONS = [
    "Two objects: a large red circle in the top left and a small blue square in the center.",
    "One object: a small green star in the bottom right.",
    "",
]


@pytest.fixture(scope="module")
def model() -> UAEModel:
    torch.manual_seed(0)
    m = build_tiny_model(seed=0).eval()
    # the decoder starts adaLN-Zero (output independent of its input); give the zero-initialised
    # matrices small weights, as training would, so that conditions and seeds change images
    with torch.no_grad():
        for p in m.decoder.parameters():
            if p.ndim == 2 and not p.any():
                p.normal_(0, 0.02)
    return m


@pytest.fixture(scope="module")
def images():
    from unified_bench.tracks.shapes.splits import shapes_samples

    return [s.image for s in shapes_samples("val", size=256, limit=3)]


def test_projector_shapes_and_padding():
    proj = UAEProjector(in_dim=16, out_dim=24, pooled_dim=8)
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    tokens, pooled = proj(hidden, mask)
    assert tokens.shape == (2, 5, 24) and pooled.shape == (2, 8)
    assert torch.all(tokens[0, 3:] == 0) and tokens[0, :3].abs().sum() > 0
    # the pooled vector ignores padding: changing a padded hidden state changes nothing
    hidden2 = hidden.clone()
    hidden2[0, 4] += 100.0
    torch.testing.assert_close(proj(hidden2, mask)[1], pooled)
    torch.testing.assert_close(masked_mean(hidden, mask)[0], hidden[0, :3].mean(0))


def test_image_tokens_match_the_vision_tower(model, images):
    """The processor expands <|image_pad|> into exactly as many tokens as the tower returns."""
    inputs = model.caption_prompt_inputs(images)
    image_id = model.encoder.config.image_token_id
    per_image = (inputs["input_ids"] == image_id).sum(dim=1)
    assert per_image.tolist() == [9, 9, 9]  # 96 px, 16 px patches, 2 x 2 merge: one token per Shapes cell
    features = model.encoder.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
    assert [f.shape for f in features] == [torch.Size([9, TINY_LLM_WIDTH])] * 3
    out = model.encoder(**inputs, use_cache=False)
    assert out.logits.shape[:2] == inputs["input_ids"].shape


def test_caption_sampling_contract(model, images):
    sample = model.sample_captions(images, seeds=[1, 2, 3], max_new_tokens=12)
    assert len(sample.texts) == 3 and sample.token_ids.shape == sample.logprobs.shape == sample.mask.shape
    assert torch.all(sample.logprobs[sample.mask == 0] == 0) and torch.all(sample.logprobs[sample.mask == 1] < 0)
    # a caption depends on its image and seed, not on its batch
    alone = model.sample_captions(images[1:2], seeds=[2], max_new_tokens=12)
    assert alone.texts[0] == sample.texts[1]
    # teacher forcing recomputes the sampling log-probabilities (what GRPO's ratio needs)
    prompt = model.caption_prompt_inputs(images)
    recomputed = model.caption_logprobs(prompt, sample.token_ids, sample.mask, temperature=sample.temperature)
    torch.testing.assert_close(recomputed, sample.logprobs, atol=1e-4, rtol=1e-4)
    greedy_a = model.sample_captions(images, seeds=[1, 2, 3], temperature=0, max_new_tokens=8).texts
    greedy_b = model.sample_captions(images, seeds=[7, 8, 9], temperature=0, max_new_tokens=8).texts
    assert greedy_a == greedy_b


def test_first_eos_mask():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]])
    assert first_eos_mask(ids, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_condition_is_differentiable_to_the_llm_not_the_vision_tower(model):
    model.zero_grad(set_to_none=True)
    cond = model.encode_condition(CAPTIONS)
    assert cond.tokens.shape == (3, model.settings.condition_length, TINY_DECODER_CONFIG["joint_attention_dim"])
    assert cond.pooled.shape == (3, TINY_DECODER_CONFIG["pooled_projection_dim"])
    (cond.tokens.square().mean() + cond.pooled.square().mean()).backward()
    llm = model.encoder.model.language_model
    assert llm.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert model.projector.token_mlp[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.model.visual.parameters())
    model.zero_grad(set_to_none=True)


def test_decoder_forward_backward_and_x0(model):
    import copy

    model = copy.deepcopy(model)
    # adaLN-Zero: at initialisation the modulations and the output projection are zero, so only
    # they get a gradient; give them weights (as one optimiser step would) to see the whole path
    with torch.no_grad():
        for p in model.decoder.parameters():
            if p.ndim == 2 and not p.any():
                p.normal_(0, 0.02)
    model.zero_grad(set_to_none=True)
    cond = model.encode_condition(CAPTIONS)
    x = torch.randn(3, *model.latent_shape)
    sigmas = torch.tensor([0.2, 0.5, 0.9])
    v = model.velocity(x, sigmas, cond)
    assert v.shape == x.shape == (3, *model.latent_shape) == (3, 8, 12, 12)
    image = model.decode_latents(x)
    assert image.shape == (3, 3, model.settings.image_size, model.settings.image_size)
    v.square().mean().backward()
    assert model.decoder.proj_out.weight.grad.abs().sum() > 0
    assert model.projector.pooled_mlp[0].weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    with torch.no_grad():  # x0_hat and v describe the same straight path
        x0_hat = model.predict_clean(x, sigmas, cond)
        torch.testing.assert_close(x - sigmas.view(-1, 1, 1, 1) * model.velocity(x, sigmas, cond), x0_hat, atol=1e-5, rtol=1e-5)


def test_stepwise_sampler_with_a_custom_step(model):
    cond = model.encode_condition(CAPTIONS[:2])
    calls = []

    def noisy_step(x, v, sigma, sigma_next, generators):
        calls.append((sigma, sigma_next))
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
        return x + (sigma_next - sigma) * v + 0.01 * noise, torch.full((x.shape[0],), -1.0)

    traj = model.sample_latents(cond, seeds=[3, 4], num_steps=4, step_fn=noisy_step, keep_steps=True)
    assert len(calls) == 4 and calls[0][0] == pytest.approx(1.0) and calls[-1][1] == 0.0
    assert traj.logprobs.shape == (2, 4) and len(traj.steps) == 5
    assert traj.sigmas == [s for s, _ in calls] + [0.0]


def test_generation_is_seeded_and_batch_independent(model):
    a = model.generate(CAPTIONS[:2], seeds=[10, 11], num_steps=3)
    b = model.generate(CAPTIONS[1:2], seeds=[11], num_steps=3)
    assert a[0].size == (model.settings.image_size,) * 2 and a[0].mode == "RGB"
    # same noise and same (fixed-length) condition: equal up to float rounding of batched matmuls
    assert _pixels(a[1]).sub(_pixels(b[0])).abs().max() <= 2
    c = model.generate(CAPTIONS[:2], seeds=[10, 11], num_steps=3, guidance_scale=2.0)
    assert _pixels(c[0]).sub(_pixels(a[0])).abs().max() > 2


def _pixels(image) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(image, dtype=np.int16))


def test_save_and_load_round_trip(model, tmp_path, images):
    model.save_pretrained(tmp_path / "ckpt")
    names = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"encoder", "processor", "projector", "decoder", "scheduler", "uae_config.json"} <= names
    loaded = UAEModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.settings == model.settings
    assert loaded.processor.image_processor.image_mean == model.processor.image_processor.image_mean
    a = model.generate(CAPTIONS[:1], seeds=[5], num_steps=2)[0]
    b = loaded.generate(CAPTIONS[:1], seeds=[5], num_steps=2)[0]
    assert _pixels(a).sub(_pixels(b)).abs().max() <= 2  # bit-exact weights; kernels may round differently
    assert model.caption(images[:1], seeds=[1]) == loaded.caption(images[:1], seeds=[1])


def test_saved_tokenizer_keeps_no_call_settings(model, tmp_path, images):
    """The fast tokenizer remembers the last call's truncation and padding (the condition's
    fixed length); saved, they became every later call's default max_length, and transformers
    warned on each captioning batch. A checkpoint must not carry them."""
    import json
    import warnings

    model.condition_token_ids(CAPTIONS[:1])  # leaves truncation and padding at condition_length
    model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "processor" / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    loaded = UAEModel.from_pretrained(tmp_path / "ckpt")
    assert "max_length" not in loaded.processor.tokenizer.init_kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inputs = loaded.caption_prompt_inputs(images[:2])
    assert inputs["input_ids"].shape[0] == 2
    ids, _ = loaded.condition_token_ids(CAPTIONS)  # the condition still pads to its fixed length
    assert ids.shape == (len(CAPTIONS), loaded.settings.condition_length)


def test_tokenizer_round_trips_the_caption_grammar(model):
    from unified_bench.tracks.shapes.captions import caption, paraphrase, parse
    from unified_bench.tracks.shapes.splits import shapes_samples

    tok = model.tokenizer
    for sample in shapes_samples("val", size=32, limit=20):
        for text in (caption(sample.scene, "long"), caption(sample.scene, "short"), paraphrase(sample.scene, "long", 3)):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids, text
            assert parse(tok.decode(ids)) == parse(text)
    assert tok.decode(tok("A circle, a star.")["input_ids"]) == "a circle, a star."


def test_lora_merge_keeps_the_function(model):
    import copy

    from uae_reference.lora import DECODER_LORA_TARGETS, ENCODER_LORA_TARGETS, LoraSettings, add_lora, has_lora, lora_parameter_count, merge_lora

    m = copy.deepcopy(model)
    add_lora(m.encoder, LoraSettings(r=4, alpha=8), ENCODER_LORA_TARGETS)
    add_lora(m.decoder, LoraSettings(r=4, alpha=8), DECODER_LORA_TARGETS)
    # r * (in + out) per adapted linear: 2 LLM layers x (q, o: 128->128; k, v: 128->64; gate, up, down: 128<->256);
    # 4 MMDiT blocks x 8 projections 128->128 (the last block has no text output projection)
    assert lora_parameter_count(m.encoder) == 2 * 4 * (2 * 256 + 2 * 192 + 3 * 384)
    assert lora_parameter_count(m.decoder) == (4 * 8 - 1) * 4 * (128 + 128)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # make the adapters do something
    assert not any(p.requires_grad for n, p in m.decoder.named_parameters() if "lora_" not in n)
    cond_before = m.encode_condition(CAPTIONS[:1]).tokens
    x = torch.randn(1, *m.latent_shape)
    v_before = m.velocity(x, torch.tensor([0.5]), m.encode_condition(CAPTIONS[:1]))
    merge_lora(m)
    assert not has_lora(m)
    torch.testing.assert_close(m.encode_condition(CAPTIONS[:1]).tokens, cond_before, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m.velocity(x, torch.tensor([0.5]), m.encode_condition(CAPTIONS[:1])), v_before, atol=1e-4, rtol=1e-4)
    assert tensor_to_images(torch.zeros(1, 3, 4, 4))[0].getpixel((0, 0)) == (128, 128, 128)
