"""The fused CPU graph behind ``ScoringConfig.fuse`` (unified_bench.metrics.graph), on a tiny
CLIP checkpoint built here: oneDNN really fuses the traced forward, the numbers stay those of
the eager model, other batch shapes run eagerly, and a backbone that cannot be traced stays
eager with a warning instead of failing the run."""

from __future__ import annotations

import pytest
import torch

import tiny_models
from unified_bench.metrics import build_metric
from unified_bench.metrics.graph import FusedForward


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return build_metric("clip", checkpoint=str(tiny_models.tiny_clip(tmp_path_factory.mktemp("m") / "clip")))


def _pixels(metric, n: int, seed: int) -> torch.Tensor:
    side = metric.processor.crop_size["height"]
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_fused_forward_is_fused_and_keeps_the_numbers(clip):
    x, other = _pixels(clip, 4, 0), _pixels(clip, 3, 1)
    with torch.inference_mode():
        eager, eager_other = clip.forward(x), clip.forward(other)
    assert clip.enable_fusion() and clip.execution == "eager"  # built lazily on the first batch
    before = torch.jit.onednn_fusion_enabled()
    with torch.inference_mode():
        assert torch.equal(clip.forward(x), eager)  # the trace run's own output: no extra forward
    groups = []
    for _ in range(3):
        with torch.inference_mode():
            out = clip.forward(x)
        groups.append(str(torch.jit.last_executed_optimized_graph()).count("oneDNNFusionGroup"))
        assert (out - eager).abs().max().item() < 1e-5
    assert clip.execution == "fused graph (oneDNN)"
    assert groups[-1] > 0  # after its profiling run the graph executes as oneDNN fusion groups
    assert torch.jit.onednn_fusion_enabled() == before  # the global switch is restored
    with torch.inference_mode():
        assert torch.equal(clip.forward(other), eager_other)  # another shape: the eager module


def test_untraceable_backbone_stays_eager_with_a_warning():
    class Broken(torch.nn.Module):
        def forward(self, pixel_values):
            raise RuntimeError("cannot trace this")

    fused = FusedForward(Broken(), lambda output: output, label="metric 'x'")
    with pytest.warns(UserWarning, match="metric 'x': could not build a fused graph"):
        with pytest.raises(RuntimeError):
            fused(torch.ones(2, 3))  # the eager module is what fails, as it would without fusion
    assert "cannot trace this" in fused.failure and not fused.active


def test_fusion_is_only_for_float32_on_a_cpu(tmp_path):
    checkpoint = str(tiny_models.tiny_clip(tmp_path / "clip"))
    half = build_metric("clip", checkpoint=checkpoint, dtype="bfloat16")
    assert not half.enable_fusion() and half.fused is None and half.execution == "eager"
    siglip = build_metric("siglip", checkpoint=str(tiny_models.tiny_siglip(tmp_path / "siglip")))
    assert not siglip.enable_fusion()  # SiglipMetric.fusable: its numbers moved when fused
