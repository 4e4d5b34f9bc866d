"""Why U4G's clip fraction is zero: the importance ratio's spread in a few real tiny U4G steps.

    .venv/bin/python benchmarks/u4g_ratio_spread.py [--checkpoint DIR] [--steps 3] [--passes 2]

Runs the tiny U4G preset (from the shipped G4U checkpoint, the one U4G starts from) for a few
rollout steps with the trainer's own update (``_update``: one AdamW step per minibatch,
``updates_per_step`` minibatches per rollout batch, as Flow-GRPO's "updated twice per epoch").
Before each minibatch's update it re-scores that minibatch's stored transitions under the
current decoder and prints the spread of ``ratio = exp(logp_new - logp_old)`` per trained
(row, denoising step): the first minibatch is on-policy (ratio 1 up to float error), the
second has seen one optimiser step. ``--passes 2`` also re-uses each rollout batch for a
second pass (Flow-GRPO's ``num_inner_epochs`` > 1, which none of its recipes use), to show how
far the ratio moves when the same samples are updated on again. Seconds to a minute on one core.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def ratios_of(model, rollout, rows: torch.Tensor, config) -> torch.Tensor:
    """Per (row, trained step) ratio of the current decoder's log-probability to the rollout's."""
    from uae_reference.rl.sde import schedule_t_cap, sde_step
    from uae_reference.rl.u4g import _index_condition

    guidance = model.settings.guidance_scale if config.guidance_scale is None else config.guidance_scale
    cond = _index_condition(rollout.cond, rows)
    uncond = None if rollout.uncond is None else _index_condition(rollout.uncond, rows)
    t_cap = schedule_t_cap(rollout.sigmas)
    out = []
    for k in rollout.train_steps:
        x, x_next = rollout.states[rows, k], rollout.states[rows, k + 1]
        t, t_next = rollout.sigmas[k], rollout.sigmas[k + 1]
        v = model.guided_velocity(x, t, cond, uncond, guidance)
        log_prob = sde_step(x, v, t, t_next, noise_level=config.noise_level, t_cap=t_cap, prev_sample=x_next, reduce=config.logprob_reduce).log_prob
        out.append(torch.exp(log_prob - rollout.old_logprobs[rows, k]))
    return torch.stack(out, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "uae_reference" / "checkpoints" / "uae-tiny-stages" / "g4u"))
    parser.add_argument("--steps", type=int, default=3, help="rollout steps")
    parser.add_argument("--passes", type=int, default=2, help="passes over each rollout batch (the preset makes 1)")
    parser.add_argument("--prompts", type=int, default=0, help="captions per step (0: the preset's)")
    args = parser.parse_args()

    from accelerate import Accelerator

    from uae_reference.data import batch_indices, step_generator
    from uae_reference.model import UAEModel
    from uae_reference.rl.config import rl_config
    from uae_reference.rl.grpo import group_advantages
    from uae_reference.rl.rewards import ReconstructionReward
    from uae_reference.rl.rollout import ReferencePolicy, load_prompts
    from uae_reference.rl.trainer import PolicyLoss, _update, configure_trainable
    from uae_reference.rl.u4g import u4g_rollout

    torch.set_num_threads(1)
    overrides = {"prompts_per_step": args.prompts} if args.prompts else {}
    config = rl_config("tiny", "u4g", init_from=args.checkpoint, steps=args.steps, **overrides)
    model = UAEModel.from_pretrained(args.checkpoint)
    module, params = configure_trainable(model, config)
    reference = ReferencePolicy(module, use_adapters=True)
    reward = ReconstructionReward(config.reward)
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_module, optimizer = accelerator.prepare(PolicyLoss(model, config, reference), optimizer)
    data = load_prompts(model, config.train_split, config.train_samples)
    dims = math.prod(model.latent_shape)
    print(
        f"tiny U4G preset from {Path(args.checkpoint).name}: {config.prompts_per_step} captions x G = {config.group_size}, "
        f"{config.updates_per_step} updates per rollout batch, lr {config.learning_rate:g}, beta {config.beta:g} "
        f"({config.kl_scale} KL), clip {config.clip_low:g}, log-probabilities {config.logprob_reduce} over {dims} dims; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| step | pass | minibatch | optimiser steps on this batch before it | median abs(ratio - 1) | max abs(ratio - 1) "
        f"| outside the preset's clip ({config.clip_low:g}) | outside Flow-GRPO's clip (1e-4) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for step in range(args.steps):
        generator = step_generator(config.seed, step, 0)
        indices = batch_indices(len(data), config.prompts_per_step, seed=config.seed, step=step, rank=0, world_size=1)
        rollout = u4g_rollout(model, reward, data, indices, config, step)
        advantages = group_advantages(rollout.rewards, std_scope=config.std_scope, eps=config.advantage_eps)
        advantages = advantages.clamp(-config.advantage_clip, config.advantage_clip).flatten()
        done = 0
        for epoch in range(args.passes):
            order = torch.randperm(advantages.numel(), generator=generator)
            for m, rows in enumerate(order.chunk(config.updates_per_step)):
                deviation = (ratios_of(model, rollout, rows, config) - 1).abs().flatten()
                outside = (deviation > config.clip_low).float().mean().item()
                outside_fg = (deviation > 1e-4).float().mean().item()
                print(
                    f"| {step + 1} | {epoch + 1} | {m + 1} | {done} | {deviation.median().item():.1e} | "
                    f"{deviation.max().item():.1e} | {outside:.1%} | {outside_fg:.1%} |"
                )
                _update(accelerator, loss_module, optimizer, params, rollout, rows, advantages[rows], config, generator)
                done += 1
    reward.close()


if __name__ == "__main__":
    main()
