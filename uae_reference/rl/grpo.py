"""The GRPO math as small pure functions (no model, no loop).

One step of GRPO on a batch of ``num_groups`` groups of ``G`` samples each:

1. **Advantages** (:func:`group_advantages`): each reward minus its group's mean, divided by
   a standard deviation — the group's own (original GRPO), the whole batch's (Flow-GRPO's
   ``global_std``, "PPO-lite"), or none (Dr. GRPO) — plus ``eps`` so a group whose samples
   all scored the same gets zero advantage instead of 0/0.
2. **Clipped surrogate** (:func:`clipped_surrogate`): per token (or per denoising step) the
   PPO objective ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))`` with importance ratio
   ``r = exp(logp_new - logp_old)``. Where the clipped branch is the larger one the loss is a
   constant in the parameters, so its gradient is exactly zero: the policy cannot be pushed
   further in the direction the advantage favours once it has moved ``eps`` away from the
   sampling policy. :attr:`Surrogate.clipped` marks those elements.
3. **KL to the reference** (:func:`kl_k3`): Schulman's unbiased, always non-negative "k3"
   estimator ``exp(q - p) - (q - p) - 1`` of ``KL(pi || pi_ref)`` from samples of ``pi``,
   with ``p = log pi`` and ``q = log pi_ref`` at the sampled token. For the decoder, whose
   per-step policies are Gaussians of equal variance, the KL is known in closed form
   (:func:`gaussian_mean_kl`).
4. **Normalisation** (:func:`aggregate`): how per-token losses become one number. The
   original GRPO averages each sequence over its own length and then over sequences, which
   weighs a token of a short caption more than a token of a long one (a length bias: longer
   captions with positive advantage are pushed less per token). ``"token"`` divides the sum
   over all tokens by their count (DAPO/BNPO); ``"constant"`` divides by ``batch * max_len``,
   a constant independent of the lengths (Dr. GRPO). Which one is used matters here, where
   the aha moment is precisely about caption length.

The formulas follow the GRPO (arXiv 2402.03300), Dr. GRPO (arXiv 2503.20783) and DAPO (arXiv
2503.14476) papers and TRL's ``GRPOTrainer``; this file is a fresh implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

StdScope = Literal["group", "batch", "none"]
Normalisation = Literal["sequence", "token", "constant"]

STD_SCOPES: tuple[str, ...] = ("group", "batch", "none")
NORMALISATIONS: tuple[str, ...] = ("sequence", "token", "constant")


def group_advantages(rewards: torch.Tensor, *, std_scope: StdScope = "group", eps: float = 1e-4) -> torch.Tensor:
    """Group-normalised advantages of rewards laid out as ``[num_groups, group_size]``.

    ``A = (r - mean_group(r)) / (std + eps)`` with the population standard deviation of the
    group (``"group"``), of the whole batch (``"batch"``), or no division (``"none"``: the
    centred reward, as Dr. GRPO recommends). The mean is always per group: it is the
    baseline that makes GRPO need no value network.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [num_groups, group_size], got shape {tuple(rewards.shape)}")
    if std_scope not in STD_SCOPES:
        raise ValueError(f"std_scope must be one of {STD_SCOPES}, got {std_scope!r}")
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if std_scope == "none":
        return centred
    if std_scope == "group":
        std = rewards.std(dim=1, unbiased=False, keepdim=True)
    else:
        std = rewards.std(unbiased=False)
    return centred / (std + eps)


@dataclass
class Surrogate:
    """Per-element output of :func:`clipped_surrogate` (same shape as the log-probs)."""

    #: the loss to minimise, ``max(-A r, -A clip(r))``
    loss: torch.Tensor
    #: importance ratio ``exp(logp_new - logp_old)``
    ratio: torch.Tensor
    #: True where the clipped branch is active (zero gradient there)
    clipped: torch.Tensor


def clipped_surrogate(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float | None = None,
) -> Surrogate:
    """PPO's clipped importance-ratio objective, elementwise.

    ``advantages`` broadcasts against the log-probs (``[B, 1]`` for per-sequence advantages
    over ``[B, T]`` tokens). ``logp_old`` is the sampling policy's log-probability and is
    treated as a constant. ``clip_high`` defaults to ``clip_low`` (symmetric PPO clip;
    DAPO's "clip-higher" sets it larger).
    """
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logp_new - logp_old.detach())
    advantages = advantages.to(ratio.dtype)
    unclipped = -advantages * ratio
    clipped_ratio = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = -advantages * clipped_ratio
    loss = torch.maximum(unclipped, clipped)
    # The clipped branch wins (and the gradient vanishes) exactly when the ratio has left the
    # trust region on the side the advantage pushes towards.
    active = ((ratio > 1.0 + clip_high) & (advantages > 0)) | ((ratio < 1.0 - clip_low) & (advantages < 0))
    return Surrogate(loss=loss, ratio=ratio, clipped=active.expand_as(loss))


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of ``KL(pi || pi_ref)`` per sampled element: ``e^(q-p) - (q-p) - 1``.

    Unbiased when the samples come from ``pi``, and non-negative for every sample (unlike the
    plain log-ratio), which keeps a per-token penalty well behaved.
    """
    delta = logp_ref.detach() - logp
    return torch.exp(delta) - delta - 1.0


def gaussian_mean_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor | float, *, reduce: str = "mean") -> torch.Tensor:
    """``KL(N(mean, std^2 I) || N(mean_ref, std^2 I))`` per sample: ``|mean - mean_ref|^2 / (2 std^2)``.

    ``reduce="sum"`` is the exact KL of the two isotropic Gaussians (summed over every
    non-batch dimension); ``reduce="mean"`` divides it by the number of dimensions (the
    per-dimension scale at which Flow-GRPO weighs its KL term and log-probabilities).
    """
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    per_dim = (mean - mean_ref.detach()).pow(2) / (2.0 * std.pow(2))
    dims = tuple(range(1, per_dim.ndim))
    if reduce == "sum":
        return per_dim.sum(dim=dims)
    if reduce == "mean":
        return per_dim.mean(dim=dims)
    raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")


def aggregate(values: torch.Tensor, mask: torch.Tensor, *, mode: Normalisation, max_length: int | None = None) -> torch.Tensor:
    """Reduce per-token values ``[B, T]`` under ``mask`` to a scalar, by one of three normalisations.

    - ``"sequence"``: mean over each sequence's own tokens, then mean over sequences (GRPO);
    - ``"token"``: sum over all tokens / number of tokens (DAPO, TRL's ``bnpo``);
    - ``"constant"``: sum over all tokens / (B * ``max_length``) (Dr. GRPO); ``max_length``
      defaults to ``T``.
    """
    if mode not in NORMALISATIONS:
        raise ValueError(f"mode must be one of {NORMALISATIONS}, got {mode!r}")
    mask = mask.to(values.dtype)
    masked = values * mask
    if mode == "sequence":
        per_sequence = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_sequence.mean()
    if mode == "token":
        return masked.sum() / mask.sum().clamp(min=1.0)
    length = values.shape[1] if max_length is None else max_length
    return masked.sum() / (values.shape[0] * length)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (a logging helper)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
