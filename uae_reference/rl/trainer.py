"""One loop for both RL stages, on one CPU or many processes through ``accelerate``.

Read :func:`train_rl_stage` top to bottom:

1. an ``Accelerator`` (plain on one process, DDP under ``accelerate launch``);
2. the model from ``init_from``; the stage's trainable module (the encoder for G4U, the
   decoder for U4G) gets LoRA adapters (or trains in full), everything else is frozen; the
   reference policy is that module with adapters off (or a frozen copy);
3. the reward metric, AdamW with a linear warm-up, the loss module wrapped by accelerate;
4. per step: this rank's prompts (``batch_indices`` of (seed, step, rank)), a rollout with the
   unwrapped model and no gradient, rewards gathered from every rank so advantages (and a
   batch std) are global, then ``updates_per_step`` optimiser steps on shuffled minibatches
   (U4G: each minibatch's loss is accumulated over a random ``train_fraction`` of the
   denoising steps, one backward per step, one optimiser step at the end);
5. a CSV row per step (averaged over ranks), example captions in ``samples.jsonl``;
6. at the end the LoRA adapters are merged and the model is written to ``output_dir/final``
   together with ``curves.png``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from uae_reference.data import batch_indices, step_generator
from uae_reference.model import UAEModel
from uae_reference.rl.config import G4UConfig, RLConfig, U4GConfig
from uae_reference.rl.curves import StepLog, plot_curves
from uae_reference.rl.grpo import group_advantages
from uae_reference.rl.rewards import ReconstructionReward
from uae_reference.rl.rollout import ReferencePolicy, load_prompts

FINAL_DIR = "final"
LOG_FILE = "log.csv"
PLOT_FILE = "curves.png"
SAMPLES_FILE = "samples.jsonl"
CONFIG_FILE = "rl_config.json"


@dataclass
class RLResult:
    """What a finished RL stage produced."""

    stage: str
    output_dir: Path
    final_dir: Path
    steps: int
    seconds: float
    log_path: Path
    first_reward: float
    last_reward: float
    parameters_changed: bool


def configure_trainable(model: UAEModel, config: RLConfig) -> tuple[nn.Module, list[nn.Parameter]]:
    """Freeze everything but the stage's module (LoRA adapters in it, or all its weights)."""
    from uae_reference.lora import DECODER_LORA_TARGETS, ENCODER_LORA_TARGETS, add_lora

    model.requires_grad_(False)
    module = model.encoder if config.stage == "g4u" else model.decoder
    if config.lora is not None:
        targets = ENCODER_LORA_TARGETS if config.stage == "g4u" else DECODER_LORA_TARGETS
        add_lora(module, config.lora, targets)  # only adapter weights come back trainable
    else:
        module.requires_grad_(True)
    return module, [p for p in module.parameters() if p.requires_grad]


class PolicyLoss(nn.Module):
    """The model plus its stage's loss, as one module (what DistributedDataParallel wraps)."""

    def __init__(self, model: UAEModel, config: RLConfig, reference: ReferencePolicy) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self._reference = [reference]  # not a submodule: never wrapped, saved or trained

    def forward(self, rollout, rows: torch.Tensor, advantages: torch.Tensor, k: int | None = None) -> dict[str, torch.Tensor]:
        if self.config.stage == "g4u":
            from uae_reference.rl.g4u import g4u_loss

            return g4u_loss(self.model, rollout, rows, advantages, self.config)
        from uae_reference.rl.u4g import u4g_step_loss

        return u4g_step_loss(self.model, self._reference[0], rollout, rows, k, advantages, self.config)


def process_state():
    """accelerate's process state, created the way :func:`train_rl_stage` needs it.

    Without CUDA, ``cpu=True`` makes accelerate join launched ranks over gloo (MULTI_CPU);
    the state is a singleton, so whoever touches it first must ask for the CPU.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _snapshot(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().flatten().float().clone() for p in params]) if params else torch.zeros(0)


def train_rl_stage(
    config: RLConfig,
    *,
    model: UAEModel | None = None,
    show_progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
) -> RLResult:
    """Run one RL stage (G4U or U4G) and write its final checkpoint."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed

    from uae_reference.rl.g4u import g4u_rollout
    from uae_reference.rl.u4g import u4g_rollout

    # find_unused_parameters: a block may not reach the loss on every pass (e.g. SD3's last
    # block has no text output); on CPU the extra bookkeeping is negligible.
    # cpu=True without CUDA: under a launcher (LOCAL_RANK set) accelerate then joins the ranks
    # with gloo (MULTI_CPU) instead of running each process on its own.
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    threads_before = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    out = Path(config.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(config.to_json())
    set_seed(config.seed)
    started = time.time()

    # --- model, trainable module, reference, reward -------------------------------------------
    if model is None:
        if not config.init_from:
            from unified_bench.core.errors import ConfigError

            raise ConfigError("an RL stage starts from a checkpoint: set init_from (e.g. uae_reference/checkpoints/uae-tiny)")
        model = UAEModel.from_pretrained(config.init_from, device=str(accelerator.device))
    module, params = configure_trainable(model, config)
    reference = ReferencePolicy(module, use_adapters=config.lora is not None)
    reward = ReconstructionReward(config.reward, device=str(accelerator.device))
    before = _snapshot(params)

    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    warmup = config.warmup_steps * config.updates_per_step
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0)
    loss_module = PolicyLoss(model, config, reference)
    loss_module, optimizer = accelerator.prepare(loss_module, optimizer)

    with accelerator.main_process_first():
        data = load_prompts(model, config.train_split, config.train_samples)

    log = StepLog(out / LOG_FILE) if accelerator.is_main_process else None
    samples_file = (out / SAMPLES_FILE).open("w") if accelerator.is_main_process else None
    progress = None
    if show_progress and accelerator.is_main_process:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn(f"[bold]{config.stage}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        progress.start()
        task = progress.add_task(config.stage, total=config.steps, info="")

    first_reward = last_reward = float("nan")
    world, rank = accelerator.num_processes, accelerator.process_index
    try:
        for step in range(config.steps):
            step_started = time.perf_counter()
            generator = step_generator(config.seed, step, rank)
            indices = batch_indices(len(data), config.prompts_per_step, seed=config.seed, step=step, rank=rank, world_size=world)

            # --- rollout (no gradient, unwrapped model) --------------------------------------
            if isinstance(config, G4UConfig):
                rollout = g4u_rollout(model, reference, reward, data, indices, config, step)
            else:
                rollout = u4g_rollout(model, reward, data, indices, config, step)

            # --- advantages over every rank's groups ------------------------------------------
            all_rewards = accelerator.gather(rollout.rewards.to(accelerator.device)).cpu()
            advantages = group_advantages(all_rewards, std_scope=config.std_scope, eps=config.advantage_eps)
            if config.advantage_clip > 0:
                advantages = advantages.clamp(-config.advantage_clip, config.advantage_clip)
            local = advantages[rank * config.prompts_per_step : (rank + 1) * config.prompts_per_step].flatten()

            # --- updates -------------------------------------------------------------------------
            update_started = time.perf_counter()
            n_rows = local.numel()
            order = torch.randperm(n_rows, generator=generator)
            chunks = order.chunk(config.updates_per_step)
            stats: dict[str, list[float]] = {}
            for rows in chunks:
                values = _update(accelerator, loss_module, optimizer, params, rollout, rows, local[rows], config, generator)
                schedule.step()
                for key, value in values.items():
                    stats.setdefault(key, []).append(value)
            seconds_update = time.perf_counter() - update_started

            # --- log ---------------------------------------------------------------------------
            group_std = all_rewards.std(dim=1, unbiased=False).mean().item()
            local_stats = torch.tensor(
                [
                    *(sum(v) / len(v) for v in stats.values()),
                    *rollout.stats.values(),
                    *rollout.timings.values(),
                    seconds_update,
                ],
                dtype=torch.float64,
            )
            reduced = accelerator.reduce(local_stats.to(accelerator.device), reduction="mean").cpu().tolist()
            names = [*stats.keys(), *rollout.stats.keys(), *rollout.timings.keys(), "seconds_update"]
            row = {
                "step": step + 1,
                "reward": all_rewards.mean().item(),
                "reward_std": all_rewards.std(unbiased=False).item(),
                "reward_group_std": group_std,
                "lr": schedule.get_last_lr()[0],
                **dict(zip(names, reduced)),
                "seconds_step": time.perf_counter() - step_started,
                "elapsed": time.time() - started,
            }
            if math.isnan(first_reward):
                first_reward = row["reward"]
            last_reward = row["reward"]
            if log is not None and ((step + 1) % config.log_every == 0 or step + 1 == config.steps or step == 0):
                log.write(row)
                _write_examples(samples_file, step + 1, rollout, config)
            if on_step:
                on_step(step + 1, row)
            if progress is not None:
                info = f"reward={row['reward']:.4f} len={row.get('caption_length', 0):.1f} kl={row.get('kl', 0):.4f}"
                progress.update(task, completed=step + 1, info=info)
    finally:
        if progress is not None:
            progress.stop()
        if samples_file is not None:
            samples_file.close()

    # --- final checkpoint -------------------------------------------------------------------------
    after = _snapshot(params)
    changed = bool((after - before).abs().max() > 0) if params else False
    if world > 1:  # every rank records its weights: DDP must leave them identical
        import hashlib

        digest = hashlib.sha256(after.numpy().tobytes()).hexdigest()
        (out / f"weights-rank{rank}.sha256").write_text(digest + "\n")
    final_dir = out / FINAL_DIR
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(loss_module).model
        if final_dir.exists():
            shutil.rmtree(final_dir)
        trained.eval().save_pretrained(final_dir)  # merges the LoRA adapters into plain weights
        plot_curves([(config.stage, out / LOG_FILE)], out / PLOT_FILE, title=f"{config.stage.upper()} on Shapes")
    accelerator.wait_for_everyone()
    reward.close()
    torch.set_num_threads(threads_before)
    # no accelerator.end_training(): it destroys the process group, and the next stage of
    # `rl train --stage all` runs in the same processes
    return RLResult(
        stage=config.stage,
        output_dir=out,
        final_dir=final_dir,
        steps=config.steps,
        seconds=time.time() - started,
        log_path=out / LOG_FILE,
        first_reward=first_reward,
        last_reward=last_reward,
        parameters_changed=changed,
    )


def _update(accelerator, loss_module, optimizer, params, rollout, rows, advantages, config, generator) -> dict[str, float]:
    """One optimiser step on the rollout rows ``rows``; returns the step's loss terms."""
    terms: dict[str, float] = {}
    if isinstance(config, U4GConfig):
        # The rollout's stochastic steps (its SDE window), never the last hop (sigma_min ~ 1e-3
        # -> 0): its Gaussian is so narrow that the ratio is noise. Flow-GRPO's
        # timestep_fraction = 0.99 of 10 steps drops it the same way.
        candidates = rollout.train_steps
        n_train = max(1, round(config.train_fraction * len(candidates)))
        train_steps = sorted(candidates[i] for i in torch.randperm(len(candidates), generator=generator)[:n_train].tolist())
        for i, k in enumerate(train_steps):
            last = i == len(train_steps) - 1
            # gradients of every denoising step are summed locally and all-reduced once
            with nullcontext() if last else accelerator.no_sync(loss_module):
                out = loss_module(rollout, rows, advantages, k)
                accelerator.backward(out["loss"] / n_train)
            for key, value in out.items():
                terms[key] = terms.get(key, 0.0) + float(value.detach()) / n_train
    else:
        out = loss_module(rollout, rows, advantages)
        accelerator.backward(out["loss"])
        terms = {key: float(value.detach()) for key, value in out.items()}
    grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm) if config.max_grad_norm > 0 else torch.tensor(0.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    terms["grad_norm"] = float(grad_norm)
    return terms


def _write_examples(handle, step: int, rollout, config: RLConfig) -> None:
    if handle is None or config.log_examples <= 0:
        return
    group = config.group_size
    for b in range(min(config.log_examples, len(rollout.indices))):
        if isinstance(config, G4UConfig):
            captions = rollout.texts[b * group : (b + 1) * group]
        else:
            captions = [rollout.texts[b]]
        record = {
            "step": step,
            "sample_index": rollout.indices[b],
            "captions": captions,
            "rewards": [round(float(r), 5) for r in rollout.rewards[b]],
        }
        handle.write(json.dumps(record) + "\n")
    handle.flush()
