"""Pillow's resize, bit for bit, on the metric's device (for GPU scoring).

On a GPU machine the backbones are fast and the CPU threads that resize each image with
Pillow are the bottleneck (``benchmarks/scoring_throughput.py --device cuda``). This module
moves the resize and centre crop to the device without changing a single pixel: it reproduces
Pillow's 8-bit resampling arithmetic exactly.

Pillow resizes an 8-bit image in two separable passes, horizontal then vertical. For each
output position it precomputes, in double precision, the filter weights over a window of
input positions, normalises them to sum to one, and rounds them to fixed point with 22
fractional bits. Each output value is ``clip(floor((2**21 + sum(input * weight)) / 2**22))``
over the window, in integers; the horizontal pass's output is stored as 8-bit before the
vertical pass reads it. Here the weights are computed the same way (the same float64
operations in the same order; :func:`coefficients`), placed in a dense matrix per image, and
applied as batched float64 matrix products. Every product and partial sum is an integer below
2**34, which float64 holds exactly whatever the summation order, so the result is Pillow's.

Only the polynomial filters (bicubic, bilinear) are supported: the windowed-sinc ones call
``sin`` from the C library, whose last bit may differ from the device's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

PRECISION_BITS = 22  # Pillow: 32 bits - 8 for the result - 2 for overshoot of the filters

#: (height, width) -> ((resized height, resized width), (top, left, crop height, crop width))
Geometry = Callable[[int, int], tuple[tuple[int, int], tuple[int, int, int, int]]]


def _bicubic(x: np.ndarray) -> np.ndarray:
    # Pillow's bicubic convolution with a = -0.5, evaluated in the same order as its C code.
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


#: Pillow resample code -> (filter, support)
FILTERS: dict[int, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    int(Image.Resampling.BICUBIC): (_bicubic, 2.0),
    int(Image.Resampling.BILINEAR): (_bilinear, 1.0),
}


@lru_cache(maxsize=4096)
def coefficients(in_size: int, out_size: int, resample: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's resampling window for each output position: (first input index [out],
    fixed-point weights [out, window]), zero past each window's end."""
    fn, base_support = FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = base_support * filterscale
    window = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    first = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - first
    taps = np.arange(window)
    inside = taps[None, :] < count[:, None]
    weights = _filter_at(fn, taps, first, center, 1.0 / filterscale)
    weights = np.where(inside, weights, 0.0)
    total = np.zeros(out_size)
    for tap in range(window):  # summed in order, as Pillow does (NumPy's sum is pairwise)
        total = total + weights[:, tap]
    weights = np.divide(weights, total[:, None], out=weights.copy(), where=total[:, None] != 0.0)
    one = float(1 << PRECISION_BITS)
    fixed = np.where(weights < 0, np.trunc(-0.5 + weights * one), np.trunc(0.5 + weights * one))
    return first, fixed.astype(np.int64)


def _filter_at(fn, taps: np.ndarray, first: np.ndarray, center: np.ndarray, ss: float) -> np.ndarray:
    position = (taps[None, :] + first[:, None]).astype(np.float64)
    return fn(((position - center[:, None]) + 0.5) * ss)


def _window(in_size: int, out_size: int, resample: int, start: int, count: int, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """Output positions start..start+count: (first input index [count], weights [count, taps])."""
    first, fixed = coefficients(in_size, out_size, resample)
    padded = np.zeros((count, taps), dtype=np.float64)
    padded[:, : fixed.shape[1]] = fixed[start : start + count]
    return first[start : start + count], padded


def _stack_windows(specs: list[tuple[int, int, int, int]], resample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows for several images (in size, out size, start, count) with a common tap count."""
    taps = max(coefficients(i, o, resample)[1].shape[1] for i, o, _, _ in specs)
    windows = [_window(i, o, resample, start, count, taps) for i, o, start, count in specs]
    return (
        torch.from_numpy(np.stack([w[0] for w in windows])),
        torch.from_numpy(np.stack([w[1] for w in windows])),
    )


def _dense(first: torch.Tensor, weights: torch.Tensor, padded: int) -> torch.Tensor:
    """Windows -> [N, padded input, count] float64 matrices, built on the windows' device.
    Taps past a window's end weigh zero, so clamping their index is harmless."""
    n, count, taps = weights.shape
    rows = (first[:, :, None] + torch.arange(taps, device=first.device)).clamp_(max=padded - 1)
    index = rows * count + torch.arange(count, device=first.device)[None, :, None]
    matrix = torch.zeros((n, padded * count), dtype=torch.float64, device=first.device)
    matrix.scatter_add_(1, index.reshape(n, -1), weights.reshape(n, -1))
    return matrix.view(n, padded, count)


def shortest_edge_size(height: int, width: int, edge: int) -> tuple[int, int]:
    """(height, width) with the shorter side scaled to ``edge`` and the longer truncated, the
    rule of both transformers' get_resize_output_image_size(default_to_square=False) and
    torchvision's Resize(int)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(edge * long / short)
    return (new_long, edge) if width <= height else (edge, new_long)


def hf_geometry(processor) -> Geometry | None:
    """The resize-then-crop geometry of a transformers PIL image processor, or None when its
    settings are not ones reproduced here (then the processor runs as usual)."""
    size = _entries(processor.size)
    if not processor.do_resize:
        return None
    if set(size) == {"shortest_edge"}:
        edge = int(size["shortest_edge"])

        def resized(height: int, width: int) -> tuple[int, int]:
            return shortest_edge_size(height, width, edge)
    elif set(size) == {"height", "width"}:
        fixed = (int(size["height"]), int(size["width"]))

        def resized(height: int, width: int) -> tuple[int, int]:
            return fixed
    else:
        return None
    if processor.do_center_crop:
        crop = _entries(processor.crop_size)
        if set(crop) != {"height", "width"}:
            return None
        crop_h, crop_w = int(crop["height"]), int(crop["width"])
        if set(size) == {"shortest_edge"} and min(crop_h, crop_w) > edge:
            return None  # the processor would pad
        if set(size) == {"height", "width"} and (crop_h > fixed[0] or crop_w > fixed[1]):
            return None

        def geometry(height: int, width: int):
            rh, rw = resized(height, width)
            if crop_h > rh or crop_w > rw:
                raise ValueError(f"crop {crop_h}x{crop_w} does not fit a {rh}x{rw} resize")
            # transformers' center_crop: floor division
            return (rh, rw), ((rh - crop_h) // 2, (rw - crop_w) // 2, crop_h, crop_w)

        return geometry

    def uncropped(height: int, width: int):
        rh, rw = resized(height, width)
        return (rh, rw), (0, 0, rh, rw)

    return uncropped


def _entries(size) -> dict:
    """The set fields of a size setting: a dict, or transformers' SizeDict (unset fields None)."""
    if size is None:
        return {}
    items = size.items() if hasattr(size, "items") else vars(size).items()
    return {key: value for key, value in items if value is not None}


def torchvision_geometry(edge: int, crop: int) -> Geometry:
    """``Resize(edge)`` + ``CenterCrop(crop)`` of torchvision on PIL images (crop <= edge)."""

    def geometry(height: int, width: int):
        rh, rw = shortest_edge_size(height, width, edge)
        # torchvision's center_crop: round half to even
        return (rh, rw), (int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0)), crop, crop)

    return geometry


@dataclass(frozen=True)
class DeviceResize:
    """A processor's resize + centre crop, reproduced on the device."""

    resample: int
    geometry: Geometry
    #: largest padded uint8 batch to pack (page-locked host memory, two batches in flight);
    #: a batch of larger images keeps the threads' Pillow resize
    max_batch_bytes: int = 1 << 30

    def supports(self, images: Sequence[Image.Image]) -> bool:
        """Whether ``pack`` takes these images: RGB, and a padded batch within the budget."""
        if not images or any(image.mode != "RGB" for image in images):
            return False
        height = max(image.height for image in images)
        width = max(image.width for image in images)
        return len(images) * height * width * 3 <= self.max_batch_bytes

    def pack(self, images: Sequence[Image.Image]) -> PackedImages:
        """Images -> one padded uint8 batch and each image's resampling windows (cheap: a copy
        per image; the windows are cached per size)."""
        height = max(image.height for image in images)
        width = max(image.width for image in images)
        batch = torch.empty((len(images), height, width, 3), dtype=torch.uint8)
        plans = []
        view = batch.numpy()
        for k, image in enumerate(images):
            view[k, : image.height, : image.width] = np.asarray(image)
            plans.append((image.height, image.width, *self.geometry(image.height, image.width)))
        crops = {plan[3][2:] for plan in plans}
        if len(crops) != 1:
            raise ValueError(f"images in one batch must crop to one size, got {sorted(crops)}")
        crop_h, crop_w = crops.pop()
        horizontal = _stack_windows([(w, rw, left, crop_w) for h, w, (rh, rw), (top, left, *_) in plans], self.resample)
        vertical = _stack_windows([(h, rh, top, crop_h) for h, w, (rh, rw), (top, left, *_) in plans], self.resample)
        return PackedImages(batch, (*horizontal, *vertical))


@dataclass
class PackedImages:
    """Decoded images and their resampling windows, waiting for :meth:`resize` on the device."""

    pixels: torch.Tensor  # [N, H, W, 3] uint8, each image at the top left
    #: first input column [N, crop w] and weights [N, crop w, taps]; then the same for rows
    windows: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

    def __len__(self) -> int:
        return self.pixels.shape[0]

    def pin_memory(self) -> PackedImages:
        return PackedImages(self.pixels.pin_memory(), tuple(w.pin_memory() for w in self.windows))

    def resize(self, device: torch.device, max_elements: int = 1 << 26) -> torch.Tensor:
        """Resize and crop on ``device``: [N, 3, crop h, crop w] float64 holding 0..255, the
        values Pillow's resize + crop give. Works through the batch in pieces of at most
        ``max_elements`` input values, to bound device memory."""
        pixels = self.pixels.to(device, non_blocking=True)
        windows = [w.to(device, non_blocking=True) for w in self.windows]
        per_image = pixels.shape[1] * pixels.shape[2] * 3
        step = max(1, max_elements // per_image)
        return torch.cat(
            [self._resize(pixels[i : i + step], [w[i : i + step] for w in windows]) for i in range(0, len(self), step)]
        )

    @staticmethod
    def _resize(pixels: torch.Tensor, windows: list[torch.Tensor]) -> torch.Tensor:
        n, height, width, _ = pixels.shape
        h_first, h_weights, v_first, v_weights = windows
        crop_w, crop_h = h_first.shape[1], v_first.shape[1]
        x = pixels.to(torch.float64).permute(0, 1, 3, 2).reshape(n, height * 3, width)
        x = _fixed_point(torch.bmm(x, _dense(h_first, h_weights, width)))  # 8-bit, as Pillow stores it
        x = x.reshape(n, height, 3 * crop_w)
        x = _fixed_point(torch.bmm(_dense(v_first, v_weights, height).transpose(1, 2), x))
        return x.reshape(n, crop_h, 3, crop_w).permute(0, 2, 1, 3)


def _fixed_point(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8: round the 22-bit fixed-point sums to 8 bits, clamped to 0..255."""
    half, one = float(1 << (PRECISION_BITS - 1)), float(1 << PRECISION_BITS)
    return torch.floor((sums + half) / one).clamp_(0.0, 255.0)
