"""The Flow-GRPO SDE step: the flow-matching ODE sampled as an SDE with the same marginals.

Conventions are SD3's (see :mod:`uae_reference.flow`): ``t`` (= sigma) runs from 1 (noise) to 0
(data), ``x_t = (1 - t) x0 + t eps``, and the network predicts ``v = dx_t/dt = eps - x0``.

**Why an SDE.** GRPO needs a stochastic policy with a tractable likelihood; the ODE sampler
``dx = v dt`` is deterministic. For any diffusion coefficient ``g(t)`` the reverse-time SDE

    dx = [v(x, t) - g(t)^2 / 2 * score(x, t)] dt + g(t) dW        (dt < 0)

has the same marginals ``p_t`` as the ODE (Song et al., 2021). On the straight path the score
is a function of the velocity: ``E[eps | x_t] = x + (1 - t) v`` and ``score = -E[eps | x_t] / t``,
so the drift becomes ``v + g^2 / (2t) * (x + (1 - t) v)`` — nothing besides ``v`` is needed.

**Noise schedule.** Flow-GRPO takes ``g(t) = a * sqrt(t / (1 - t))`` with one noise level
``a`` (0.7 for SD3.5): large noise early, vanishing near the data. At ``t = 1`` the formula is
infinite, so ``t`` in the denominator is capped at the schedule's second value (Flow-GRPO's
choice). Then ``g^2 / (2t) = a^2 / (2 (1 - t_capped))`` needs no division by ``t``.

**One Euler–Maruyama step** from ``t`` to ``t_next`` (``dt = t_next - t < 0``) is Gaussian:

    x_next ~ N(mean, std^2 I),  mean = x + [v + a^2 / (2 (1 - t_c)) * (x + (1 - t) v)] dt,
                                std  = g(t) * sqrt(-dt)

so its log-probability is the closed-form Gaussian density, differentiable in the network's
parameters through ``mean``. That is the whole trick of Flow-GRPO; this file implements it
afresh as a pure function that can be tested alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

#: velocity(x, t) -> v; t is a Python float for the whole batch
VelocityFn = Callable[[torch.Tensor, float], torch.Tensor]


def sde_noise_std(t: float, noise_level: float, t_cap: float | None = None) -> float:
    """The diffusion coefficient ``g(t) = a * sqrt(t / (1 - min(t, t_cap)))``."""
    t_c = t if t_cap is None else min(t, t_cap)
    if t_c >= 1.0:
        raise ValueError(f"g(t) is infinite at t = {t}; pass t_cap < 1 (the schedule's second value)")
    return noise_level * math.sqrt(t / (1.0 - t_c))


@dataclass
class SDEStep:
    """One SDE step: the next sample, its log-probability, and the Gaussian it was drawn from."""

    #: the next sample ``x_{t_next}`` (detached: it is an action, not a function of the parameters)
    sample: torch.Tensor
    #: ``log N(sample; mean, std^2 I)`` per batch element (summed or averaged over dimensions)
    log_prob: torch.Tensor
    #: the Gaussian's mean (differentiable through ``v``)
    mean: torch.Tensor
    #: the Gaussian's standard deviation (a scalar for the whole batch)
    std: float


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: float, *, reduce: str = "sum") -> torch.Tensor:
    """``log N(sample; mean, std^2 I)`` per batch element; ``reduce="mean"`` gives the per-dimension average."""
    per_dim = -((sample - mean) ** 2) / (2.0 * std**2) - math.log(std) - 0.5 * math.log(2.0 * math.pi)
    dims = tuple(range(1, per_dim.ndim))
    if reduce == "sum":
        return per_dim.sum(dim=dims)
    if reduce == "mean":
        return per_dim.mean(dim=dims)
    raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")


def per_sample_noise(shape: torch.Size, generators: Sequence[torch.Generator], *, device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise, row ``i`` from ``generators[i]`` (so a sample never depends on its batch)."""
    rows = [torch.randn(shape[1:], generator=g) for g in generators]
    return torch.stack(rows).to(device=device, dtype=dtype)


def sde_step(
    x: torch.Tensor,
    v: torch.Tensor,
    t: float,
    t_next: float,
    *,
    noise_level: float,
    t_cap: float | None = None,
    noise: torch.Tensor | None = None,
    prev_sample: torch.Tensor | None = None,
    reduce: str = "sum",
) -> SDEStep:
    """One Euler–Maruyama step of the marginal-preserving SDE from ``t`` down to ``t_next``.

    Either ``noise`` (standard normal, shape of ``x``) draws a new sample, or ``prev_sample``
    (a sample drawn earlier, e.g. during the rollout) is scored under the Gaussian that the
    current ``v`` defines — the training pass of GRPO. Computed in float32: the drift's
    coefficient is large near ``t = 1`` and half precision loses the mean.
    """
    if noise_level <= 0:
        raise ValueError("noise_level must be > 0 (a = 0 is the deterministic ODE, which has no density)")
    if not t_next < t:
        raise ValueError(f"the sampler runs from t = 1 down to 0; got t = {t}, t_next = {t_next}")
    if (noise is None) == (prev_sample is None):
        raise ValueError("pass exactly one of noise (to sample) or prev_sample (to score)")
    x32, v32 = x.float(), v.float()
    dt = t_next - t
    t_c = t if t_cap is None else min(t, t_cap)
    g = sde_noise_std(t, noise_level, t_cap)
    half_g2_over_t = noise_level**2 / (2.0 * (1.0 - t_c))  # = g(t)^2 / (2t), without dividing by t
    eps_hat = x32 + (1.0 - t) * v32  # E[eps | x_t]
    mean = x32 + (v32 + half_g2_over_t * eps_hat) * dt
    std = g * math.sqrt(-dt)
    if prev_sample is None:
        sample = (mean + std * noise.float()).detach()
    else:
        sample = prev_sample.float().detach()
    log_prob = gaussian_log_prob(sample, mean, std, reduce=reduce)
    return SDEStep(sample=sample, log_prob=log_prob, mean=mean, std=std)


#: the two scales of the decoder's KL term (``U4GConfig.kl_scale``)
KL_SCALES: tuple[str, ...] = ("exact", "flow-grpo")


def sde_step_kl(
    mean: torch.Tensor,
    mean_ref: torch.Tensor,
    t: float,
    t_next: float,
    *,
    noise_level: float,
    t_cap: float | None = None,
    scale: str = "exact",
    reduce: str = "mean",
) -> torch.Tensor:
    """The KL term of one SDE step between the policy's Gaussian and the reference's, per sample.

    Both Gaussians have the same covariance ``std^2 I`` with ``std = g(t) sqrt(|dt|)``; they
    differ in their means. Two scales:

    - ``"exact"``: ``|mean - mean_ref|^2 / (2 g(t)^2 |dt|)``, the KL divergence of the two
      Gaussians (:func:`uae_reference.rl.grpo.gaussian_mean_kl` with the transition std);
    - ``"flow-grpo"``: ``|mean - mean_ref|^2 / (2 g(t)^2)``, the term Flow-GRPO's trainer adds
      (its ``std_dev_t`` is ``g(t)``, without ``sqrt(|dt|)``), i.e. ``|dt|`` times the exact KL.

    A weight ``beta`` on one scale is ``beta / |dt|`` on the other (9 for the tiny schedule's
    steps, 3.7 to 25 for SD3's shift-3 schedule of 10 steps). ``reduce`` as in
    :func:`gaussian_log_prob` ("mean": per dimension, Flow-GRPO's reduction).
    """
    from uae_reference.rl.grpo import gaussian_mean_kl

    if scale not in KL_SCALES:
        raise ValueError(f"scale must be one of {KL_SCALES}, got {scale!r}")
    g = sde_noise_std(t, noise_level, t_cap)
    std = g * math.sqrt(t - t_next) if scale == "exact" else g
    return gaussian_mean_kl(mean, mean_ref, std, reduce=reduce)


def schedule_t_cap(sigmas: Sequence[float]) -> float:
    """The cap of ``t`` in ``g(t)``'s denominator: the schedule's second value (as Flow-GRPO)."""
    return float(sigmas[1]) if len(sigmas) > 1 and sigmas[0] >= 1.0 else float(sigmas[0])


# --- samplers on a velocity function (the toy-flow tests and any plain flow model) ------------


def sample_ode(velocity: VelocityFn, x: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Euler integration of ``dx/dt = v`` along ``sigmas`` (decreasing, ending at 0)."""
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (t_next - t) * velocity(x, t)
    return x


@dataclass
class SDETrajectory:
    """Every state of an SDE rollout and the log-probability of each transition."""

    states: list[torch.Tensor]  # len(sigmas) states: x at sigmas[0], ..., x at sigmas[-1]
    log_probs: torch.Tensor  # [B, len(sigmas) - 1]


def sample_sde(
    velocity: VelocityFn,
    x: torch.Tensor,
    sigmas: Sequence[float],
    *,
    noise_level: float,
    generator: torch.Generator | None = None,
    reduce: str = "sum",
) -> SDETrajectory:
    """Euler–Maruyama integration of the marginal-preserving SDE, keeping every state."""
    t_cap = schedule_t_cap(sigmas)
    states, log_probs = [x], []
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
        step = sde_step(x, velocity(x, t), t, t_next, noise_level=noise_level, t_cap=t_cap, noise=noise, reduce=reduce)
        x = step.sample
        states.append(x)
        log_probs.append(step.log_prob)
    return SDETrajectory(states, torch.stack(log_probs, dim=1))
