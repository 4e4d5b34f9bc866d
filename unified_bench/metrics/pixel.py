"""Pixel metrics: SSIM and PSNR of the reconstruction against its reference.

Both compare 8-bit RGB pixels after resizing the reconstruction to the reference's size
with PIL bicubic (a generator's output size rarely equals the photo's). Choices, fixed so
numbers are comparable across runs:

- SSIM: scikit-image ``structural_similarity`` with the settings of Wang et al. (2004):
  11x11 Gaussian window (sigma 1.5), population covariance, K1 = 0.01, K2 = 0.03,
  ``data_range=255``, computed per RGB channel and averaged. An image smaller than the
  window (under 11 px on a side) cannot be scored: that pair gets an error, not a crash.
- PSNR: ``10 * log10(255^2 / MSE)`` in dB, MSE over all pixels and channels. Identical
  images have MSE 0 (infinite PSNR); we report ``PSNR_CAP_DB`` = 100 dB instead and cap
  every value there, so means stay finite. Above 100 dB means MSE < 6.5e-6: in a 1024x1024
  RGB image, fewer than about 20 channel values off by one, i.e. identical for any purpose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from unified_bench.metrics.base import MetricInfo, PairInput, PairMetric, PairScore

PSNR_CAP_DB = 100.0
SSIM_SIGMA = 1.5
#: The window scikit-image derives from sigma 1.5 with gaussian_weights=True: 2*int(3.5*1.5+0.5)+1.
SSIM_WINDOW = 11
RESIZE = "reconstruction resized to the reference size, PIL bicubic"


def aligned_arrays(reference: Image.Image, reconstruction: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Both images as uint8 RGB arrays of the reference's size."""
    reference = reference.convert("RGB")
    reconstruction = reconstruction.convert("RGB")
    if reconstruction.size != reference.size:
        reconstruction = reconstruction.resize(reference.size, Image.Resampling.BICUBIC)
    return np.asarray(reference), np.asarray(reconstruction)


def psnr_db(reference: np.ndarray, reconstruction: np.ndarray, *, peak: float = 255.0, cap: float = PSNR_CAP_DB) -> float:
    """PSNR in dB of two equally shaped arrays, capped at ``cap`` (identical -> ``cap``)."""
    diff = reference.astype(np.float64) - reconstruction.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return cap
    return min(cap, 10.0 * math.log10(peak * peak / mse))


def ssim(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean SSIM of two uint8 RGB arrays (Wang et al. settings; see module docstring)."""
    from skimage.metrics import structural_similarity

    height, width = reference.shape[:2]
    if min(height, width) < SSIM_WINDOW:
        raise ValueError(
            f"image is {width}x{height} px, smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window; cannot compute SSIM"
        )
    return float(
        structural_similarity(
            reference,
            reconstruction,
            channel_axis=-1,
            data_range=255,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
        )
    )


class _PixelMetric(PairMetric):
    #: How the number is computed, recorded in ``info.preprocessing`` after the shared resize.
    method: ClassVar[dict[str, Any]] = {}

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", dtype: str | None = None) -> None:
        # No weights, no device: the arguments exist only for the registry's uniform constructor.
        del checkpoint, device, dtype

    @property
    def info(self) -> MetricInfo:
        return MetricInfo(
            name=self.name, kind=self.kind, preprocessing={"resize": RESIZE, **self.method}, dtype="float64"
        )

    def _score(self, reference: np.ndarray, reconstruction: np.ndarray) -> float:
        raise NotImplementedError

    def score_pairs(self, pairs: Sequence[PairInput]) -> list[PairScore]:
        scores = []
        for pair in pairs:
            try:
                reference, reconstruction = aligned_arrays(pair.reference, pair.reconstruction)
                scores.append(PairScore(self._score(reference, reconstruction)))
            except ValueError as err:
                scores.append(PairScore(None, error=f"{self.name}: {err}"))
        return scores


class SsimMetric(_PixelMetric):
    name = "ssim"
    unit = "ssim"
    method = {
        "implementation": "skimage.metrics.structural_similarity",
        "window": f"{SSIM_WINDOW}x{SSIM_WINDOW} gaussian, sigma {SSIM_SIGMA}",
        "use_sample_covariance": False,
        "data_range": 255,
        "channels": "RGB, per channel then averaged",
    }

    def _score(self, reference: np.ndarray, reconstruction: np.ndarray) -> float:
        return ssim(reference, reconstruction)


class PsnrMetric(_PixelMetric):
    name = "psnr"
    unit = "db"
    method = {"formula": "10*log10(255^2/MSE) over all pixels and RGB channels", "cap_db": PSNR_CAP_DB}

    def _score(self, reference: np.ndarray, reconstruction: np.ndarray) -> float:
        return psnr_db(reference, reconstruction)
