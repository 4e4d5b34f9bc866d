"""What both stages share around a rollout: seeds, the reference policy, caption statistics.

- **Seeds.** Every random draw of a rollout (a caption, an initial noise, an SDE increment)
  comes from a generator seeded by ``(seed, step, sample index, group member)``, so a rollout
  does not depend on the batch it was drawn in, on the number of processes, or on a resume.
- **Reference policy.** The KL term compares the policy with the model RL started from.
  With LoRA that is the same module with its adapters switched off by peft's own
  ``disable_adapter()`` (no copy, as Flow-GRPO does); without LoRA it is a frozen copy made
  before training.
- **Caption statistics** for the "aha moment": caption length in tokens, and attribute values
  a caption states per object of the true scene, read with the Shapes grammar's parser.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from unified_bench.tracks.shapes.captions import parse
from unified_bench.tracks.shapes.compare import compare_scenes
from unified_bench.tracks.shapes.scene import Scene


def load_prompts(model, split: str, limit: int):
    """The first ``limit`` Shapes samples of ``split``, rendered at the decoder's size (the
    reward's originals) and at the encoder's input size (what it captions)."""
    from uae_reference.data import ShapesTrainingSet

    encoder_size = getattr(model.settings, "encoder_image_size", 0)
    if encoder_size:
        return ShapesTrainingSet.load(split, model.settings.image_size, limit, encoder_size=encoder_size)
    return ShapesTrainingSet.load(split, model.settings.image_size, limit)


def encoder_inputs(data, indices) -> torch.Tensor:
    """uint8 images the encoder reads for ``indices`` (its own render size when it has one)."""
    return getattr(data, "encoder_images", data.images)[indices]


def rollout_seed(seed: int, step: int, index: int, member: int, stream: int = 0) -> int:
    """A 63-bit seed from (seed, step, sample index, group member, stream)."""
    mixed = np.random.SeedSequence([int(seed), int(step), int(index), int(member), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    return int(mixed) % 2**63


#: independent streams of one (step, sample, member): caption sampling, decoder noise, and the
#: U4G SDE window's position (one per step)
CAPTION_STREAM, NOISE_STREAM, WINDOW_STREAM = 1, 2, 3


class ReferencePolicy:
    """The policy RL started from: adapters switched off, or a frozen copy of the module."""

    def __init__(self, module: nn.Module, *, use_adapters: bool) -> None:
        self.use_adapters = use_adapters
        self._copy = None if use_adapters else copy.deepcopy(module).requires_grad_(False).eval()

    @contextmanager
    def __call__(self, module: nn.Module) -> Iterator[nn.Module]:
        """Yield the module to run as the reference (``module`` itself with adapters off, or the copy)."""
        if self.use_adapters:
            from uae_reference.lora import adapters_disabled

            with adapters_disabled(module):
                yield module
        else:
            with torch.no_grad():
                yield self._copy


@dataclass
class CaptionStats:
    """Per-caption statistics for the logs."""

    #: tokens of the caption, EOS excluded
    length: float
    #: attribute values stated per object of the true scene (4 = every attribute of every object)
    attributes_per_object: float
    #: every object the caption mentions has a position (the long caption style)
    long: float
    #: correct stated attribute values / stated values (None when it states none)
    precision: float | None


def caption_stats(text: str, n_tokens: int, scene: Scene) -> CaptionStats:
    parsed = parse(text)
    comparison = compare_scenes(scene, parsed)
    stated = sum(comparison.attribute_stated.values())
    long = float(bool(parsed.objects) and all(o.position is not None for o in parsed.objects))
    return CaptionStats(float(n_tokens), stated / max(1, len(scene)), long, comparison.attribute_precision())


def end_at_special_tokens(model, sample):
    """Cut each sampled caption at its first special token other than EOS (which becomes EOS).

    A caption is fed back to the encoder by teacher forcing, where a sampled
    ``<|image_pad|>`` would be taken for an image placeholder. A trained captioner gives
    these tokens next to no probability; ending the caption there keeps a rare draw from
    breaking the update (the truncated caption is what is rewarded and trained on).
    """
    from uae_reference.model import CaptionSample, first_eos_mask

    eos, pad = model.eos_token_id, model.pad_token_id
    tokenizer = model.tokenizer
    special = {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special} | set(tokenizer.all_special_ids)
    specials = torch.tensor(sorted(special - {eos}), device=sample.token_ids.device)
    bad = torch.isin(sample.token_ids, specials) & sample.mask.bool()
    if not bad.any():
        return sample
    ids = sample.token_ids.masked_fill(bad, eos)
    mask = first_eos_mask(ids, eos) * sample.mask
    ids = ids.masked_fill(mask.eq(0), pad)
    texts = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    return CaptionSample(texts, ids, mask, sample.logprobs * mask, sample.temperature)


def caption_lengths(token_ids: torch.Tensor, mask: torch.Tensor, eos_id: int) -> list[int]:
    """Tokens per caption, the closing EOS excluded."""
    real = mask.bool() & token_ids.ne(eos_id)
    return real.sum(dim=1).tolist()


def summarise_captions(stats: Sequence[CaptionStats]) -> dict[str, float]:
    precisions = [s.precision for s in stats if s.precision is not None]
    return {
        "caption_length": float(np.mean([s.length for s in stats])),
        "attributes_per_object": float(np.mean([s.attributes_per_object for s in stats])),
        "long_fraction": float(np.mean([s.long for s in stats])),
        "caption_precision": float(np.mean(precisions)) if precisions else float("nan"),
    }


def row_chunks(n: int, size: int) -> list[slice]:
    """``n`` rows in consecutive slices of ``size`` (0: one slice of all of them)."""
    size = size or max(n, 1)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]
