"""Pillow's 8-bit resize reproduced as batched matrix products (unified_bench.metrics.device_resize).

The GPU scoring path resizes and crops on the device; it must give Pillow's pixels exactly,
so these tests compare bit for bit with Pillow itself on sizes that shrink and enlarge, odd
aspect ratios, both supported filters, both crop conventions, and batches of mixed sizes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from unified_bench.metrics.device_resize import (
    DeviceResize,
    PackedImages,
    coefficients,
    hf_geometry,
    torchvision_geometry,
)


def noisy_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """Smooth structure plus strong noise: every resampling weight matters, values hit 0 and 255."""
    base = rng.random((max(2, height // 8), max(2, width // 8), 3))
    smooth = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC), np.float32)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 60, (height, width, 3)), 0, 255).astype(np.uint8))


def pillow(image: Image.Image, resample: int, geometry) -> np.ndarray:
    (rh, rw), (top, left, ch, cw) = geometry(image.height, image.width)
    resized = np.asarray(image.resize((rw, rh), resample))
    return resized[top : top + ch, left : left + cw].transpose(2, 0, 1).astype(np.float64)


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR])
def test_matches_pillow_bit_for_bit(resample):
    rng = np.random.default_rng(int(resample))
    for trial in range(25):
        images = [noisy_image(rng, int(rng.integers(5, 500)), int(rng.integers(5, 500))) for _ in range(3)]
        edge = int(rng.integers(8, 300))
        crop = int(rng.integers(4, edge + 1))
        geometry = torchvision_geometry(edge, crop)
        out = DeviceResize(int(resample), geometry).pack(images).resize(torch.device("cpu"))
        assert out.shape == (3, 3, crop, crop) and out.dtype == torch.float64
        for k, image in enumerate(images):
            expected = pillow(image, resample, geometry)
            mismatched = int((out[k].numpy() != expected).sum())
            assert mismatched == 0, (trial, image.size, edge, crop, mismatched)


def test_coefficients_are_pillows_fixed_point_windows():
    first, fixed = coefficients(10, 10, int(Image.Resampling.BICUBIC))
    # Same size: each output copies its input (weight 1.0 = 2**22 at the centre tap).
    for out in range(10):
        weights = dict(zip(range(first[out], first[out] + fixed.shape[1]), fixed[out]))
        assert weights[out] == 1 << 22 and sum(weights.values()) == 1 << 22
    first, fixed = coefficients(400, 100, int(Image.Resampling.BICUBIC))  # 4x down: support 8
    assert fixed.shape[1] == 17 and (first >= 0).all()
    assert np.abs(fixed.sum(axis=1) - (1 << 22)).max() <= fixed.shape[1]  # each window sums to one


def test_hf_geometry_is_the_processors(tmp_path):
    """The resize + crop geometry read from a transformers PIL processor, against the
    processor's own uint8 output (rescale and normalise off)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    rng = np.random.default_rng(7)
    images = [noisy_image(rng, h, w) for h, w in ((37, 90), (90, 37), (64, 64), (301, 299), (20, 21))]
    processors = [
        CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}),
        CLIPImageProcessorPil(size={"shortest_edge": 33}, crop_size={"height": 33, "width": 27}),
        SiglipImageProcessorPil(size={"height": 48, "width": 40}),
    ]
    for processor in processors:
        plan = DeviceResize(int(processor.resample), hf_geometry(processor))
        expected = processor(images=images, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
        assert torch.equal(plan.pack(images).resize(torch.device("cpu")), expected.to(torch.float64))


def test_unsupported_settings_keep_the_processor():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    assert hf_geometry(CLIPImageProcessorPil(do_resize=False)) is None
    assert hf_geometry(CLIPImageProcessorPil(size={"shortest_edge": 20}, crop_size={"height": 32, "width": 32})) is None
    assert hf_geometry(CLIPImageProcessorPil(size={"shortest_edge": 20, "longest_edge": 40})) is None
    plan = DeviceResize(3, torchvision_geometry(8, 8), max_batch_bytes=2 * 30 * 30 * 3)
    assert plan.supports([Image.new("RGB", (30, 30))] * 2)
    assert not plan.supports([Image.new("L", (9, 9))])  # the processor converts other modes
    assert not plan.supports([Image.new("RGB", (30, 30))] * 3)  # over the packing budget
    assert not plan.supports([Image.new("RGB", (9, 9)), Image.new("RGB", (31, 30))])  # padding counts


def test_device_memory_is_bounded_by_working_in_pieces():
    rng = np.random.default_rng(3)
    images = [noisy_image(rng, int(rng.integers(30, 80)), int(rng.integers(30, 80))) for _ in range(7)]
    packed = DeviceResize(int(Image.Resampling.BICUBIC), torchvision_geometry(24, 20)).pack(images)
    whole = packed.resize(torch.device("cpu"))
    assert torch.equal(packed.resize(torch.device("cpu"), max_elements=1), whole)  # one image at a time
    assert isinstance(packed, PackedImages) and len(packed) == 7


def test_one_batch_must_crop_to_one_size():
    geometry = hf_geometry(type("P", (), {
        "do_resize": True, "size": {"shortest_edge": 16}, "do_center_crop": False, "crop_size": None,
    })())
    images = [Image.new("RGB", (16, 40)), Image.new("RGB", (40, 16))]
    with pytest.raises(ValueError, match="one size"):
        DeviceResize(3, geometry).pack(images)
