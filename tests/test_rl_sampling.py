"""Exact caption sampling for G4U (issue 22, finding 1).

A checkpoint's own ``generation_config`` can carry sampling settings (the real
Qwen2.5-VL-3B-Instruct recommends ``repetition_penalty=1.05`` with ``top_k=1``, ``top_p=0.001``)
that transformers merges into every ``generate`` call. With ``exact=True`` none of them may
reshape the draw: the same seeds give the same captions as the checkpoint without them, and the
returned log-probabilities are the teacher-forced ones. A real tiny UAE (random weights, built
from the tiny preset's configs) is saved twice: plain, and with those settings in its
``encoder/generation_config.json``.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from uae_reference.model import InexactSamplingError, UAEModel

#: what the checkpoint's generation_config carries in the "with settings" copy
CHECKPOINT_SETTINGS = {"repetition_penalty": 1.3, "top_k": 5, "no_repeat_ngram_size": 2}
SEEDS = [11, 12, 13, 14, 15, 16]
MAX_TOKENS = 12  # a random encoder never says EOS


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from uae_reference.presets import build_tiny_model

    root = tmp_path_factory.mktemp("sampling")
    plain = build_tiny_model(seed=0).save_pretrained(root / "plain")
    shaped = root / "shaped"
    shutil.copytree(plain, shaped)
    path = shaped / "encoder" / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **CHECKPOINT_SETTINGS}, indent=2))
    return plain, shaped


@pytest.fixture(scope="module")
def models(checkpoints):
    torch.set_num_threads(1)
    return tuple(UAEModel.from_pretrained(p) for p in checkpoints)


@pytest.fixture(scope="module")
def images():
    from unified_bench.tracks.shapes.splits import shapes_samples

    return [s.image for s in shapes_samples("val", size=96, limit=len(SEEDS))]


def _sample(model, images, temperature, **kwargs):
    return model.sample_captions(images, seeds=SEEDS, temperature=temperature, max_new_tokens=MAX_TOKENS, **kwargs)


def test_the_checkpoint_settings_load_and_reshape_the_benchmark_draw(models, images):
    """The settings are real: the benchmark path follows them (and records them), so the
    exact-sampling test below could fail."""
    plain, shaped = models
    assert shaped.caption_sampling_overrides() == CHECKPOINT_SETTINGS
    assert plain.caption_sampling_overrides() == {}
    changed = [
        t for t in (1.0, 0.7, 0.0) if not torch.equal(_sample(plain, images, t).token_ids, _sample(shaped, images, t).token_ids)
    ]
    assert changed == [1.0, 0.7, 0.0]


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_exact_sampling_ignores_the_checkpoint_settings(models, images, temperature):
    plain, shaped = models
    reference = _sample(plain, images, temperature, exact=True)
    sample = _sample(shaped, images, temperature, exact=True)
    assert sample.texts == reference.texts
    assert torch.equal(sample.token_ids, reference.token_ids)
    assert torch.equal(sample.mask, reference.mask)
    # the returned log-probabilities are the teacher-forced ones of the tokens drawn
    inputs = shaped.caption_prompt_inputs(images)
    forced = shaped.caption_logprobs(inputs, sample.token_ids, sample.mask, temperature=temperature or 1.0)
    real = sample.mask.bool()
    assert real.sum() > len(SEEDS)
    assert (sample.logprobs[real] - forced[real]).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    ("setting", "value", "processor"),
    [
        ("suppress_tokens", [5], "SuppressTokensLogitsProcessor"),
        ("forced_eos_token_id", 2, "ForcedEOSTokenLogitsProcessor"),
        ("sequence_bias", [[[5], -2.0]], "SequenceBiasLogitsProcessor"),
    ],
)
def test_the_guard_names_any_processor_it_cannot_switch_off(models, images, monkeypatch, setting, value, processor):
    """Settings whose "off" value is None cannot be neutralised by the call (transformers fills
    unset fields from the checkpoint): exact sampling refuses them instead of drawing from a
    reshaped distribution."""
    _, shaped = models
    monkeypatch.setattr(shaped.encoder.generation_config, setting, value)
    with pytest.raises(InexactSamplingError, match=processor):
        _sample(shaped, images[:2], 1.0, exact=True)
    assert len(_sample(shaped, images[:2], 1.0).texts) == 2  # the benchmark path still follows it


def test_the_benchmark_adapter_records_what_the_checkpoint_sets(checkpoints):
    from uae_reference.adapter import UAEReferenceAdapter, UAEReferenceConfig

    adapter = UAEReferenceAdapter(UAEReferenceConfig(checkpoint=str(checkpoints[1]), batch_size=4))
    extra = adapter.caption_settings("Describe the image.").extra
    assert {k: extra[k] for k in CHECKPOINT_SETTINGS} == CHECKPOINT_SETTINGS
