"""Understanding for Generation (U4G): Flow-GRPO on the decoder, the encoder frozen.

For each training image, read top to bottom:

1. **Rollout** (:func:`u4g_rollout`, no gradient): the frozen (G4U-trained) encoder captions
   the image as it would at evaluation; the caption's condition is computed once; the decoder
   draws a group of ``G`` images with the SDE sampler (:func:`uae_reference.rl.sde.sde_step`,
   noise level ``a``) in ``sde_steps`` steps — fewer than at evaluation, Flow-GRPO's
   "denoising reduction" — keeping every state ``x_k`` and each transition's log-probability;
   the reward is the metric's similarity of each image with the original. Two options narrow
   where a group's spread comes from: ``shared_initial_noise`` (one starting noise per group)
   and the SDE window (``sde_window_size``: only a few consecutive steps are stochastic, the
   rest follow the ODE, and only those steps are trained on).
2. **Advantages** per caption group (batch std by default, Flow-GRPO's ``global_std``).
3. **Update** (:func:`u4g_step_loss`): for a random ``train_fraction`` of the stochastic steps, the
   current decoder's velocity at ``(x_k, t_k)`` gives the Gaussian of step k; the stored
   ``x_{k+1}`` is scored under it (``sde_step(prev_sample=...)``), the clipped surrogate of its
   ratio to the rollout's log-probability is the policy loss, and the KL term between the
   policy's and the reference's Gaussians (:func:`uae_reference.rl.sde.sde_step_kl`: the exact
   KL ``|mean - mean_ref|^2 / (2 g^2 |dt|)``, or Flow-GRPO's ``|dt|`` times smaller term, per
   ``kl_scale``) is added with weight ``beta``. Only the decoder's LoRA adapters (or its full weights)
   learn; the encoder and projector stay frozen.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from uae_reference.data import ShapesTrainingSet
from uae_reference.flow import euler_step
from uae_reference.model import Condition, UAEModel, tensor_to_images
from uae_reference.rl.config import U4GConfig
from uae_reference.rl.grpo import clipped_surrogate
from uae_reference.rl.rewards import ReconstructionReward
from uae_reference.rl.rollout import (
    CAPTION_STREAM,
    NOISE_STREAM,
    WINDOW_STREAM,
    ReferencePolicy,
    caption_lengths,
    caption_stats,
    encoder_inputs,
    end_at_special_tokens,
    rollout_seed,
    row_chunks,
    summarise_captions,
)
from uae_reference.rl.sde import gaussian_log_prob, per_sample_noise, schedule_t_cap, sde_step, sde_step_kl


@dataclass
class U4GRollout:
    """One step's SDE trajectories, their rewards and what the update re-scores."""

    indices: list[int]  # training-set index of each caption [B]
    texts: list[str]  # the encoder's caption of each image [B]
    cond: Condition  # decoder condition of each trajectory [B * G] (group-major)
    uncond: Condition | None  # unconditional branch [B * G] when guidance is on
    states: torch.Tensor  # [B * G, K + 1, C, h, w]: x at sigma_0 = 1, ..., x at sigma_K = 0
    old_logprobs: torch.Tensor  # [B * G, K]
    sigmas: list[float]  # K + 1 values
    rewards: torch.Tensor  # [B, G]
    train_steps: list[int] = field(default_factory=list)  # the stochastic steps (the SDE window)
    stats: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reconstructions: list = field(default_factory=list)


def _index_condition(cond: Condition, rows: torch.Tensor) -> Condition:
    return Condition(cond.tokens[rows], cond.pooled[rows], cond.mask[rows])


def _join_conditions(parts: list[Condition]) -> Condition:
    if len(parts) == 1:
        return parts[0]
    return Condition(*(torch.cat([getattr(c, name) for c in parts]) for name in ("tokens", "pooled", "mask")))


def sde_step_fn(noise_level: float, t_cap: float, reduce: str, stochastic: Sequence[bool] | None = None):
    """A :data:`uae_reference.model.StepFn` drawing each row's increment from its own generator.

    ``stochastic[k]`` False makes the k-th call a deterministic Euler step (log-probability 0,
    never trained on): the SDE window. None: every step is stochastic.
    """
    calls = itertools.count()

    def step(x, v, sigma, sigma_next, generators: Sequence[torch.Generator]):
        k = next(calls)
        if stochastic is not None and not stochastic[k]:
            return euler_step(x, v, sigma, sigma_next), torch.zeros(x.shape[0], device=x.device)
        noise = per_sample_noise(x.shape, generators, device=x.device, dtype=torch.float32)
        out = sde_step(x, v, sigma, sigma_next, noise_level=noise_level, t_cap=t_cap, noise=noise, reduce=reduce)
        # The trajectory is stored in the decoder's dtype; the old log-probability must be that of
        # the stored sample (in float32 the cast is a no-op and this is out.log_prob to the bit).
        stored = out.sample.to(x.dtype)
        return stored, gaussian_log_prob(stored.float(), out.mean, out.std, reduce=reduce)

    return step


def sde_window(config: U4GConfig, step: int) -> list[int]:
    """The denoising steps that are stochastic (and trained on) in rollout ``step``.

    Every step but the last hop to sigma = 0 without a window; with ``sde_window_size`` = w, w
    consecutive steps starting at a seeded draw in ``sde_window_range`` (the same on every rank).
    """
    trainable = config.sde_steps - 1  # the last hop's Gaussian is too narrow to train on
    if not config.sde_window_size:
        return list(range(max(1, trainable)))
    low, high = config.sde_window_range or (0, trainable)
    high = min(high, trainable)
    starts = max(1, high - low - config.sde_window_size + 1)
    start = low + rollout_seed(config.seed, step, 0, 0, WINDOW_STREAM) % starts
    return list(range(start, min(start + config.sde_window_size, high)))


@torch.no_grad()
def u4g_rollout(
    model: UAEModel,
    reward: ReconstructionReward,
    data: ShapesTrainingSet,
    indices: list[int],
    config: U4GConfig,
    step: int,
) -> U4GRollout:
    """Caption each image with the frozen encoder, draw G SDE images per caption, score them."""
    group = config.group_size
    timings: dict[str, float] = {}
    was_training = model.training
    model.eval()

    # 1. captions from the frozen encoder, as at evaluation, and their conditions
    started = time.perf_counter()
    images = data.images[indices]
    seeds = [rollout_seed(config.seed, step, i, 0, CAPTION_STREAM) for i in indices]
    sample = model.sample_captions(list(encoder_inputs(data, indices)), seeds=seeds, temperature=config.caption_temperature)
    sample = end_at_special_tokens(model, sample)
    rows = torch.arange(len(indices)).repeat_interleave(group)
    guidance = model.settings.guidance_scale if config.guidance_scale is None else config.guidance_scale
    # the conditions of each rollout batch (rollout_batch_size rows; all rows by default) come from
    # that batch's captions alone, so one process with the per-rank batch size reproduces a
    # multi-process rollout exactly (batched float sums depend on the batch)
    parts = row_chunks(len(rows), config.rollout_batch_size)
    conds, unconds = [], []
    for part in parts:
        first, last = part.start // group, (part.stop - 1) // group + 1
        conds.append(_index_condition(model.encode_condition(sample.texts[first:last]), (rows[part] - first).to(model.device)))
        if guidance != 1.0:
            unconds.append(model.encode_condition([model.settings.negative_caption] * (part.stop - part.start)))
    cond = _join_conditions(conds)
    uncond = _join_conditions(unconds) if unconds else None
    timings["seconds_captions"] = time.perf_counter() - started

    # 2. G stochastic trajectories per caption
    started = time.perf_counter()
    sigmas = model.sigma_schedule(config.sde_steps)
    window = sde_window(config, step)
    stochastic = [k in window for k in range(config.sde_steps)] if config.sde_window_size else None
    noise_seeds = [rollout_seed(config.seed, step, i, g, NOISE_STREAM) for i in indices for g in range(group)]
    start = None
    if config.shared_initial_noise:  # one starting point per group; the SDE increments still differ
        start = model.initial_noise(noise_seeds[::group]).repeat_interleave(group, dim=0)
    states, logprobs, reconstructions = [], [], []
    for part, part_cond in zip(parts, conds):  # memory, not the draws: every row has its own seeds
        # a fresh step function per batch: it counts its calls to know which steps are stochastic
        step_fn = sde_step_fn(config.noise_level, schedule_t_cap(sigmas), config.logprob_reduce, stochastic)
        trajectory = model.sample_latents(
            part_cond, seeds=noise_seeds[part], num_steps=config.sde_steps, guidance_scale=guidance,
            step_fn=step_fn, keep_steps=True, initial_noise=None if start is None else start[part],
        )
        states.append(torch.stack(trajectory.steps, dim=1))
        logprobs.append(trajectory.logprobs)
        reconstructions += tensor_to_images(model.decode_latents(trajectory.latents))
    timings["seconds_sampling"] = time.perf_counter() - started

    # 3. rewards
    started = time.perf_counter()
    originals = tensor_to_images(images.float().div(127.5).sub(1.0))
    paired = [originals[k // group] for k in range(len(reconstructions))]
    if reward.is_embedding:
        scores = reward.score(reconstructions, paired, reward.embed(originals).repeat_interleave(group, dim=0))
    else:
        scores = reward.score(reconstructions, paired)
    timings["seconds_reward"] = time.perf_counter() - started

    lengths = caption_lengths(sample.token_ids, sample.mask, model.eos_token_id)
    stats = summarise_captions([caption_stats(t, n, data.scenes[i]) for t, n, i in zip(sample.texts, lengths, indices)])
    model.train(was_training)
    return U4GRollout(
        indices=list(indices),
        texts=sample.texts,
        cond=cond,
        uncond=uncond,
        states=torch.cat(states),
        old_logprobs=torch.cat(logprobs),
        sigmas=sigmas,
        rewards=scores.view(len(indices), group),
        train_steps=window,
        stats=stats,
        timings=timings,
        reconstructions=reconstructions,
    )


def u4g_step_loss(
    model: UAEModel,
    reference: ReferencePolicy,
    rollout: U4GRollout,
    rows: torch.Tensor,
    k: int,
    advantages: torch.Tensor,
    config: U4GConfig,
) -> dict[str, torch.Tensor]:
    """The Flow-GRPO loss of denoising step ``k`` for trajectories ``rows``."""
    guidance = model.settings.guidance_scale if config.guidance_scale is None else config.guidance_scale
    t, t_next = rollout.sigmas[k], rollout.sigmas[k + 1]
    t_cap = schedule_t_cap(rollout.sigmas)
    x, x_next = rollout.states[rows, k], rollout.states[rows, k + 1]
    cond = _index_condition(rollout.cond, rows)
    uncond = None if rollout.uncond is None else _index_condition(rollout.uncond, rows)
    step = sde_step(
        x, model.guided_velocity(x, t, cond, uncond, guidance), t, t_next,
        noise_level=config.noise_level, t_cap=t_cap, prev_sample=x_next, reduce=config.logprob_reduce,
    )
    adv = advantages.to(step.log_prob.device)
    surrogate = clipped_surrogate(step.log_prob, rollout.old_logprobs[rows, k], adv, clip_low=config.clip_low, clip_high=config.clip_high)
    policy_loss = surrogate.loss.mean()
    kl = torch.zeros(())
    loss = policy_loss
    if config.beta > 0:
        with reference(model.decoder) as decoder:
            swapped = model.decoder
            model.decoder = decoder
            try:
                v_ref = model.guided_velocity(x, t, cond, uncond, guidance)
            finally:
                model.decoder = swapped
        mean_ref = sde_step(
            x, v_ref, t, t_next, noise_level=config.noise_level, t_cap=t_cap, prev_sample=x_next, reduce=config.logprob_reduce
        ).mean
        kl = sde_step_kl(
            step.mean, mean_ref, t, t_next, noise_level=config.noise_level, t_cap=t_cap, scale=config.kl_scale,
            reduce=config.logprob_reduce,
        ).mean()
        loss = policy_loss + config.beta * kl
    return {
        "loss": loss,
        "policy_loss": policy_loss.detach(),
        "kl": kl.detach(),
        "clip_fraction": surrogate.clipped.float().mean(),
        "ratio": surrogate.ratio.detach().mean(),
        # the spread the clip acts on (the mean ratio hides it: deviations of both signs cancel)
        "ratio_deviation": (surrogate.ratio.detach() - 1).abs().mean(),
    }
