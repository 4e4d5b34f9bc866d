"""Unified-GRPO throughput: images/s of G4U rollouts+rewards and U4G SDE rollouts, and where the time goes.

    .venv/bin/python benchmarks/rl_throughput.py [--checkpoint DIR] [--steps 3] [--threads 2]

Runs a few real steps of each stage (``train_rl_stage``, the tiny recipe's batch shapes unless
overridden) and reads the per-phase timings the trainer logs. The first step is a warm-up and
is not counted. Two comparisons measured in the same run:

- **reward**: the original's embedding computed once per group (what the stages do) vs once
  per group member (the naive per-pair loop);
- **sampler**: one SDE rollout (log-probabilities kept, every state stored) vs the plain
  Euler ODE sampler over the same steps — the cost of making the decoder a stochastic policy.

Timings on a shared CPU vary; the script prints the machine's load average with the numbers,
and the two comparisons take the fastest of three runs of each side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _load_or_build(checkpoint: str | None, workdir: Path) -> str:
    if checkpoint:
        return checkpoint
    bundled = Path(__file__).resolve().parents[1] / "uae_reference" / "checkpoints" / "uae-tiny"
    if (bundled / "uae_config.json").is_file():
        return str(bundled)
    from uae_reference.presets import build_tiny_model

    path = workdir / "tiny-random"
    model = build_tiny_model(seed=0)
    with torch.no_grad():  # the preset zero-initialises the decoder's gates and output; make it respond
        for p in model.decoder.parameters():
            if p.ndim and not p.any():
                p.copy_(0.05 * torch.randn(p.shape))
    model.save_pretrained(path)
    print(f"(no trained checkpoint found: timing a random-weight tiny model, captions capped at {RANDOM_CAPTION_CAP} tokens)")
    return str(path)


RANDOM_CAPTION_CAP = 40


def _stage(stage: str, checkpoint: str, out: Path, steps: int, overrides: dict):
    from uae_reference.rl.config import rl_config
    from uae_reference.rl.curves import read_log
    from uae_reference.rl.trainer import train_rl_stage

    config = rl_config("tiny", stage, steps=steps, init_from=checkpoint, output_dir=str(out / stage), log_examples=0, **overrides)
    train_rl_stage(config, show_progress=False)
    return read_log(out / stage / "log.csv")[1:], config  # drop the warm-up step


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return statistics.mean(values) if values else 0.0


def _report(title: str, rows: list[dict], images: int, phases: list[tuple[str, str]]) -> None:
    rollout = sum(_mean(rows, key) for key, _ in phases[:-1])
    update = _mean(rows, phases[-1][0])
    total = rollout + update
    print(f"\n{title}: {images} images per step, {len(rows)} timed steps")
    print(f"  rollout + reward: {images / rollout:6.2f} images/s   whole step: {images / total:6.2f} images/s")
    for key, label in phases:
        value = _mean(rows, key)
        print(f"  {label:28s} {value:7.2f} s  {100 * value / total:5.1f} %")


def _best(fn, repeats: int = 3) -> float:
    """Fastest of a few runs: on a shared CPU the minimum is the least disturbed measurement."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _compare_reward(checkpoint: str, group: int, prompts: int) -> None:
    from uae_reference.data import ShapesTrainingSet
    from uae_reference.model import tensor_to_images
    from uae_reference.rl.config import RewardSettings
    from uae_reference.rl.rewards import ReconstructionReward

    reward = ReconstructionReward(RewardSettings())
    data = ShapesTrainingSet.load("train", 64, 256)  # decoder-size renders: the reward's inputs
    originals = tensor_to_images(data.images[:prompts].float().div(127.5).sub(1.0))
    recon = tensor_to_images(data.images[prompts : prompts * (group + 1)].float().div(127.5).sub(1.0))
    paired = [originals[k // group] for k in range(len(recon))]
    reward.score(recon[:2], paired[:2])  # warm-up
    cached = reward.score(recon, paired, reward.embed(originals).repeat_interleave(group, dim=0))
    naive = reward.score(recon, paired)
    assert torch.allclose(cached, naive, atol=1e-5)
    ours = _best(lambda: reward.score(recon, paired, reward.embed(originals).repeat_interleave(group, dim=0)))
    per_pair = _best(lambda: reward.score(recon, paired))
    print(f"\nreward ({reward.name}, {len(recon)} pairs): original embedded once per group {ours:.2f} s vs per pair {per_pair:.2f} s ({per_pair / ours:.2f}x)")


def _compare_sampler(checkpoint: str, n: int, steps: int) -> None:
    from uae_reference.model import UAEModel
    from uae_reference.rl.sde import schedule_t_cap
    from uae_reference.rl.u4g import sde_step_fn

    model = UAEModel.from_pretrained(checkpoint)
    captions = ["three objects: a large red circle in the top left, a small blue square in the center and a large green triangle in the bottom right."] * n
    seeds = list(range(n))
    with torch.no_grad():
        cond = model.encode_condition(captions)
        model.sample_latents(cond, seeds=seeds, num_steps=2)  # warm-up
        sigmas = model.sigma_schedule(steps)
        step_fn = sde_step_fn(0.7, schedule_t_cap(sigmas), "mean")
        ode = _best(lambda: model.sample_latents(cond, seeds=seeds, num_steps=steps))
        sde = _best(lambda: model.sample_latents(cond, seeds=seeds, num_steps=steps, step_fn=step_fn, keep_steps=True))
    print(f"sampler ({n} images, {steps} steps): ODE {ode:.2f} s, SDE with log-probs and stored states {sde:.2f} s ({sde / ode:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="UAE checkpoint (default: the bundled uae-tiny, else random tiny weights)")
    parser.add_argument("--steps", type=int, default=3, help="steps per stage (the first is a warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--prompts", type=int, default=0, help="prompts per step (0: the tiny recipe's)")
    parser.add_argument("--group", type=int, default=0, help="group size G (0: the tiny recipe's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        checkpoint = _load_or_build(args.checkpoint, out)
        overrides = {}
        if args.prompts:
            overrides["prompts_per_step"] = args.prompts
        if args.group:
            overrides["group_size"] = args.group
        random_weights = "tiny-random" in checkpoint
        g4u_rows, g4u = _stage("g4u", checkpoint, out, args.steps, {**overrides, **({"max_caption_tokens": RANDOM_CAPTION_CAP} if random_weights else {})})
        _report(
            "G4U", g4u_rows, g4u.prompts_per_step * g4u.group_size,
            [("seconds_sampling", "caption sampling + log-probs"), ("seconds_decoding", "reconstruction (ODE)"),
             ("seconds_reward", "reward"), ("seconds_update", "update")],
        )
        u4g_rows, u4g = _stage("u4g", checkpoint, out, args.steps, overrides)
        _report(
            "U4G", u4g_rows, u4g.prompts_per_step * u4g.group_size,
            [("seconds_captions", "captions (frozen encoder)"), ("seconds_sampling", "SDE sampling"),
             ("seconds_reward", "reward"), ("seconds_update", "update")],
        )
        _compare_reward(checkpoint, g4u.group_size, g4u.prompts_per_step)
        _compare_sampler(checkpoint, u4g.prompts_per_step * u4g.group_size, u4g.sde_steps)


if __name__ == "__main__":
    main()
