"""LoRA through peft's own API (issue 22, finding 4): the reference policy runs under
``PeftModel.disable_adapter()`` and checkpoints merge with ``merge_and_unload()``. On the real
tiny UAE (random weights from the tiny preset's configs, adapters given trained-like values)
both give exactly what the hand-written versions they replace gave; those are written out here
as the reference."""

from __future__ import annotations

import copy

import pytest
import torch

from uae_reference.lora import DECODER_LORA_TARGETS, ENCODER_LORA_TARGETS, LoraSettings, add_lora, adapters_disabled, has_lora, merge_lora

SETTINGS = LoraSettings(r=4, alpha=8)


def _train_like(module: torch.nn.Module, seed: int) -> None:
    """A fresh adapter is a no-op (lora_B = 0); give it values as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def _handwritten_disabled_forward(module, fn):
    """The switch this replaced: peft's private per-layer flag, flipped under no_grad."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer._disable_adapters = True
    try:
        with torch.no_grad():
            return fn()
    finally:
        for layer in layers:
            layer._disable_adapters = False


def _handwritten_merge(module):
    """The merge this replaced: each LoRA layer merged and swapped for its base layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BaseTunerLayer):
                child.merge()
                setattr(parent, name, child.get_base_layer())
    return module


@pytest.fixture(scope="module")
def lora_model():
    from uae_reference.presets import build_tiny_model

    torch.set_num_threads(1)
    model = build_tiny_model(seed=0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the decoder starts adaLN-Zero: make its output depend on its input
        for p in model.decoder.parameters():
            if p.ndim and not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    plain = copy.deepcopy(model)
    add_lora(model.encoder, SETTINGS, ENCODER_LORA_TARGETS)
    add_lora(model.decoder, SETTINGS, DECODER_LORA_TARGETS)
    _train_like(model.encoder, 2)
    _train_like(model.decoder, 3)
    return plain, model


def _outputs(model):
    """Encoder LLM hidden states of two captions, and the decoder's velocity on fixed inputs."""
    cond = model.encode_condition(["one object : a red circle.", "two objects : a blue star and a green square."])
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, *model.latent_shape, generator=gen)
    return cond.tokens, model.velocity(x, torch.tensor([0.7]), cond)


def test_lora_init_is_the_one_inject_adapter_in_model_made():
    """Same seed, same adapter weights: a retrain reproduces the shipped runs' initialisation."""
    from peft import LoraConfig, inject_adapter_in_model

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))

    a, b = net(), net()
    torch.manual_seed(5)
    add_lora(a, SETTINGS, ("0", "2"))
    torch.manual_seed(5)
    config = LoraConfig(r=SETTINGS.r, lora_alpha=SETTINGS.alpha, lora_dropout=0.0, init_lora_weights="gaussian", target_modules=["0", "2"])
    inject_adapter_in_model(config, b)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert [n for n, p in a.named_parameters() if p.requires_grad] == [n for n, p in b.named_parameters() if p.requires_grad]


@pytest.mark.slow
def test_disable_adapter_and_merge_and_unload_match_the_handwritten_versions(lora_model):
    plain, model = lora_model
    with torch.no_grad():
        base = _outputs(plain)
        adapted = _outputs(model)
    assert not torch.allclose(adapted[0], base[0]) and not torch.allclose(adapted[1], base[1])
    never_disabled = copy.deepcopy(model)
    # the reference policy: peft's disable_adapter() == the private flag == the model without LoRA
    trainable = [p for p in model.parameters() if p.requires_grad]
    with adapters_disabled(model.encoder), adapters_disabled(model.decoder):
        reference = _outputs(model)
    handwritten = _handwritten_disabled_forward(model, lambda: _outputs(model))
    for new, old, plain_out in zip(reference, handwritten, base):
        assert torch.equal(new, old)
        torch.testing.assert_close(new, plain_out, rtol=0, atol=1e-6)
    # adapters on again, the same parameter objects still trainable, gradients reach them
    assert [p for p in model.parameters() if p.requires_grad] == trainable
    tokens, velocity = _outputs(model)
    assert torch.equal(tokens, adapted[0]) and torch.equal(velocity, adapted[1])
    (tokens.square().mean() + velocity.square().mean()).backward()
    tokens, velocity = _outputs(never_disabled)
    (tokens.square().mean() + velocity.square().mean()).backward()
    expected = [p.grad for p in never_disabled.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in expected)
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(expected, trainable))
    model.zero_grad(set_to_none=True)
    # merging: merge_and_unload() == the hand-written merge, to the bit; plain layers, no peft left
    merged, reference_merge = copy.deepcopy(model), copy.deepcopy(model)
    merge_lora(merged)
    _handwritten_merge(reference_merge.encoder)
    _handwritten_merge(reference_merge.decoder)
    assert not has_lora(merged)
    assert merged.state_dict().keys() == plain.state_dict().keys() == reference_merge.state_dict().keys()
    assert all(torch.equal(merged.state_dict()[k], reference_merge.state_dict()[k]) for k in merged.state_dict())
    assert not hasattr(merged.encoder, "peft_config") and not hasattr(merged.decoder, "peft_config")
    with torch.no_grad():
        for new, old in zip(_outputs(merged), _outputs(reference_merge)):
            assert torch.equal(new, old)
    with pytest.raises(ValueError, match="no LoRA"):
        with adapters_disabled(merged.decoder):
            pass
