"""Training data: the Shapes track's train split as in-memory tensors, and seeded batches.

Images are rendered once at the model's size and cached as a ``.npy`` file (20,000 renders
at 64 px take ~1 minute and 245 MB); captions are made on the fly from the scenes with the
track's own grammar (:mod:`unified_bench.tracks.shapes.captions`).

Every random choice of a training step (which samples, which caption variant, noise levels,
noise) comes from a generator seeded by ``(seed, step, rank)`` — see :func:`step_generator` —
so a resumed run draws exactly what an uninterrupted run would have drawn, and ranks of a
multi-process run see different samples without any shared state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unified_bench.tracks.shapes.captions import _join, _sentence, caption, count_phrase, paraphrase
from unified_bench.tracks.shapes.scene import Scene
from unified_bench.tracks.shapes.splits import make_sample


def default_cache_dir() -> Path:
    """``$UAE_REFERENCE_CACHE`` or ``~/.cache/uae_reference``."""
    env = os.environ.get("UAE_REFERENCE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "uae_reference"


@dataclass
class ShapesTrainingSet:
    """The first ``len(self)`` samples of a Shapes split, rendered at the decoder's and the encoder's sizes."""

    split: str
    images: torch.Tensor  # uint8 [N, 3, size, size]: what the decoder generates
    encoder_images: torch.Tensor  # uint8 [N, 3, s, s]: what the encoder reads (may be ``images``)
    scenes: list[Scene]
    seeds: list[int]  # per-sample seeds (rendering jitter, paraphrase variants)
    #: the decoder's clean samples, when a run with a frozen VAE cached them (see encode_all)
    latents: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.scenes)

    @classmethod
    def load(
        cls, split: str, size: int, limit: int, *, encoder_size: int = 0, cache_dir: Path | None = None
    ) -> ShapesTrainingSet:
        """Scenes are cheap to make; renders are cached on disk (keyed by split, size and count)."""
        samples = [make_sample(split, i) for i in range(limit)]
        cache_dir = cache_dir or default_cache_dir()
        images = _renders(samples, split, size, cache_dir)
        encoder_images = images if encoder_size in (0, size) else _renders(samples, split, encoder_size, cache_dir)
        return cls(split, images, encoder_images, [s.scene for s in samples], [s.seed for s in samples])

    def long_caption(self, index: int, generator: torch.Generator, paraphrase_fraction: float = 0.0) -> str:
        """The canonical long caption, or (with ``paraphrase_fraction``) one of 8 paraphrases."""
        return self._caption(index, "long", generator, paraphrase_fraction)

    def short_caption(
        self, index: int, generator: torch.Generator, paraphrase_fraction: float = 0.0, order: str = "canonical"
    ) -> str:
        if order == "cell":  # the grammar's short wording, objects in grid-cell order (as long captions)
            scene = self.scenes[index]
            clauses = [f"{'an' if o.color[0] in 'aeiou' else 'a'} {o.color} {o.shape}" for o in scene.objects]
            return _sentence(count_phrase(len(scene)) + ": ", _join(clauses))
        return self._caption(index, "short", generator, paraphrase_fraction)

    def _caption(self, index: int, detail: str, generator: torch.Generator, paraphrase_fraction: float) -> str:
        if paraphrase_fraction > 0 and torch.rand((), generator=generator).item() < paraphrase_fraction:
            variant = int(torch.randint(8, (), generator=generator))
            return paraphrase(self.scenes[index], detail, seed=self.seeds[index] + variant)
        return caption(self.scenes[index], detail)


#: the ``rank`` of draws shared by all ranks (the global batch)
SHARED = 2**31


@torch.no_grad()
def encode_all(model, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The decoder's clean samples of uint8 ``images`` (VAE latents; pixels in pixel space)."""
    from uae_reference.model import uint8_to_unit

    out = [model.encode_images(uint8_to_unit(images[i : i + batch_size]).to(model.device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def _renders(samples: list, split: str, size: int, cache_dir: Path) -> torch.Tensor:
    """uint8 [N, 3, size, size] renders of ``samples`` (with their jitter), cached as .npy."""
    from unified_bench.tracks.shapes.render import render

    cache = cache_dir / f"shapes-{split}-{size}px-{len(samples)}.npy"
    if cache.exists():
        pixels = np.load(cache)
    else:
        pixels = np.stack([np.asarray(render(s.scene, size, jitter_seed=s.seed), dtype=np.uint8) for s in samples])
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, pixels)
        tmp.replace(cache)  # atomic: concurrent ranks never read a half-written file
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of one training step on one rank (a pure function of its arguments)."""
    mixed = np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) % 2**63)


def batch_indices(n: int, batch_size: int, *, seed: int, step: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Rank ``rank``'s share of step ``step``'s global batch (no repeats within a step).

    The global batch (``batch_size * world_size`` distinct samples) depends only on
    ``(seed, step)``; rank r takes the r-th slice, so ranks never see the same sample in a step.
    """
    global_batch = batch_size * world_size
    if global_batch > n:
        raise ValueError(f"a global batch of {global_batch} needs at least that many samples, have {n}")
    perm = torch.randperm(n, generator=step_generator(seed, step, rank=SHARED))
    return perm[rank * batch_size : (rank + 1) * batch_size].tolist()
