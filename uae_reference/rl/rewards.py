"""The reward: how similar a reconstruction is to its original under a frozen image metric.

It is the benchmark's own pair score — the metric object of :mod:`unified_bench.metrics`
with its official preprocessing — so the policy is rewarded for exactly what Unified-Bench
measures (cosine of embeddings for ``effnet``/``clip``/``dinov2``/..., the pixel score for
``ssim``). No gradient flows through it: GRPO only needs the number. The original's
embedding is computed once per prompt and reused across its group.

``shapes-attr`` is refused: it reads the ground-truth scene of a sample and is the held-out
evaluation metric, so rewarding it would train on the test criterion.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from uae_reference.rl.config import FORBIDDEN_REWARDS, RewardSettings
from unified_bench.core.errors import ConfigError
from unified_bench.metrics.base import EmbeddingMetric, PairInput, PairMetric


class ReconstructionReward:
    """``reward(reconstructions, originals) -> [N]`` under one frozen metric."""

    def __init__(self, settings: RewardSettings, device: str = "cpu") -> None:
        from unified_bench.metrics import build_metric

        if settings.metric in FORBIDDEN_REWARDS:
            raise ConfigError(f"{settings.metric} is an evaluation metric and cannot be a reward")
        self.settings = settings
        self.metric = build_metric(settings.metric, checkpoint=settings.checkpoint or None, device=device)
        if isinstance(self.metric, PairMetric) and self.metric.needs_meta:
            raise ConfigError(f"{settings.metric} needs ground truth (sample meta) and cannot be a reward")
        self.name = settings.metric
        network = getattr(self.metric, "model", None)
        if isinstance(network, torch.nn.Module) and any(isinstance(m, torch.nn.Conv2d) for m in network.modules()):
            # Convolutions (EfficientNet's depthwise ones above all) run ~1.5x faster on the CPU
            # with channels-last weights; the embeddings agree to ~1e-6.
            network.to(memory_format=torch.channels_last)

    @property
    def is_embedding(self) -> bool:
        return isinstance(self.metric, EmbeddingMetric)

    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised embeddings [N, D] (embedding metrics only), in metric-sized batches."""
        size = self.settings.batch_size
        return torch.cat([self.metric.embed(list(images[i : i + size])) for i in range(0, len(images), size)])

    def score(self, reconstructions: Sequence[Image.Image], originals: Sequence[Image.Image], original_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Pair scores [N]; pass ``original_embeddings`` (one row per pair) to skip re-embedding originals."""
        if len(reconstructions) != len(originals):
            raise ValueError("one original per reconstruction")
        if self.is_embedding:
            ref = original_embeddings if original_embeddings is not None else self.embed(originals)
            return (self.embed(reconstructions) * ref).sum(dim=-1)
        pairs = [PairInput(str(i), o, r) for i, (r, o) in enumerate(zip(reconstructions, originals))]
        scores = self.metric.score_pairs(pairs)
        return torch.tensor([s.value if s.value is not None else float("nan") for s in scores], dtype=torch.float32)

    def close(self) -> None:
        self.metric.close()
