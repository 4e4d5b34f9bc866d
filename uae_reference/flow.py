"""Rectified-flow math used by the decoder, as small pure functions.

Conventions (the same as Stable Diffusion 3 and diffusers' ``FlowMatchEulerDiscreteScheduler``):

- ``sigma`` in [0, 1] is the noise level; ``sigma = 0`` is the clean sample ``x0``, ``sigma = 1``
  is pure Gaussian noise. The transformer receives ``timestep = sigma * 1000``.
- The forward (noising) path is the straight line ``x_t = (1 - sigma) * x0 + sigma * noise``.
- The network predicts the velocity ``v = d x_t / d sigma = noise - x0``; the training target is
  exactly that, and the loss is the mean squared error between prediction and target.
- Training noise levels follow SD3's *logit-normal* density: ``sigma = sigmoid(u)``,
  ``u ~ N(mean, std)`` (SD3 uses mean 0, std 1). It puts most samples at intermediate noise
  levels, where the velocity is hardest to predict, and few at the trivial ends.
- Because ``x_t`` is linear in ``x0`` and ``noise``, one velocity prediction gives a one-step
  estimate of the clean sample: ``x0_hat = x_t - sigma * v_pred`` (exact when ``v_pred`` is the
  true velocity, the conditional mean of ``x0`` given ``x_t`` when ``v_pred`` is the MSE-optimal
  prediction). The cold-start stage scores this ``x0_hat`` with a frozen image embedding.
- Sampling integrates ``dx/dsigma = v`` from ``sigma = 1`` down to 0 with Euler steps:
  ``x_next = x + (sigma_next - sigma) * v``.
"""

from __future__ import annotations

import torch

#: The transformer's timestep input is sigma scaled to the scheduler's training range.
NUM_TRAIN_TIMESTEPS = 1000


def sample_sigmas_logit_normal(
    batch_size: int,
    *,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """SD3's training noise levels: ``sigmoid(N(mean, std))``, shape [batch_size]."""
    u = torch.randn(batch_size, generator=generator, device=device) * std + mean
    return torch.sigmoid(u)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's resolution shift ``shift * s / (1 + (shift - 1) * s)``; ``shift = 1`` is the identity."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _broadcast(sigmas: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigmas.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def noisy_sample(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The straight-line path ``x_t = (1 - sigma) * x0 + sigma * noise`` (per-sample sigma)."""
    s = _broadcast(sigmas, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The rectified-flow target ``d x_t / d sigma = noise - x0`` (independent of sigma)."""
    return noise - x0


def flow_matching_loss(
    v_pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error between predicted and target velocity; optional per-sample weights."""
    per_sample = (v_pred.float() - velocity_target(x0, noise).float()).pow(2).flatten(1).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights.float()
    return per_sample.mean()


def predicted_clean_sample(x_t: torch.Tensor, v_pred: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """One-step estimate of the clean sample, ``x0_hat = x_t - sigma * v_pred``."""
    return x_t - _broadcast(sigmas, x_t) * v_pred


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: float | torch.Tensor, sigma_next: float | torch.Tensor) -> torch.Tensor:
    """One deterministic Euler step of ``dx/dsigma = v`` from ``sigma`` to ``sigma_next``."""
    return x + (sigma_next - sigma) * v


def classifier_free_guidance(v_uncond: torch.Tensor, v_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """``v_uncond + scale * (v_cond - v_uncond)``; ``scale = 1`` is the conditional prediction."""
    return v_uncond + scale * (v_cond - v_uncond)
