"""One loop for both RL stages, on one CPU or many processes through ``accelerate``.

Read :func:`train_rl_stage` top to bottom:

1. an ``Accelerator`` (plain on one process, DDP under ``accelerate launch``) and the sharding
   plan (``config.sharding``: none, FSDP2 or DeepSpeed ZeRO-3; :mod:`uae_reference.rl.distributed`);
2. the model from ``init_from``; the stage's trainable module (the encoder for G4U, the
   decoder for U4G) gets LoRA adapters (or trains in full), everything else is frozen; the
   reference policy is that module with adapters off (or a frozen copy);
3. the reward metric, AdamW with a linear warm-up, the loss module wrapped by accelerate (DDP),
   sharded by FSDP2, or wrapped by a DeepSpeed engine;
4. per step: this rank's prompts (``batch_indices`` of (seed, step, rank)), a rollout with
   whole parameters and no gradient (the unwrapped model; gathered under sharding), rewards
   gathered from every rank so advantages (and a batch std) are global, then
   ``updates_per_step`` optimiser steps on shuffled minibatches (U4G: each minibatch's loss is
   accumulated over a random ``train_fraction`` of the denoising steps, one backward per step,
   one optimiser step at the end). A minibatch may be split into micro-batches; each pass's
   loss is weighted by its share of the minibatch over every rank, so the update is the one a
   single process would make on the global minibatch;
5. a CSV row per step (averaged over ranks), example captions in ``samples.jsonl``, and the
   same row to TensorBoard or Weights & Biases when ``report_to`` asks;
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
from uae_reference.rl.rollout import ReferencePolicy, load_prompts, row_chunks

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


def enable_checkpointing(model: UAEModel, module: nn.Module, stage: str) -> None:
    """Recompute the trained module's blocks in the backward pass instead of keeping their activations.

    transformers checkpoints only in training mode, so the model is put in it (the RL stages
    otherwise run in eval mode; none of these modules has active dropout, so only the
    checkpointing changes). Rollouts switch to eval mode and back as before.
    """
    if stage == "g4u":  # transformers >= 5 names it activation checkpointing (non-reentrant by default)
        enable = getattr(module, "activation_checkpointing_enable", None)
        if enable is not None:
            enable()
        else:
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        module.enable_gradient_checkpointing()
    model.train()


class PolicyLoss(nn.Module):
    """The model plus its stage's loss, as one module (what DistributedDataParallel wraps)."""

    def __init__(self, model: UAEModel, config: RLConfig, reference: ReferencePolicy) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self._reference = [reference]  # not a submodule: never wrapped, saved or trained

    def forward(
        self, rollout, rows: torch.Tensor, advantages: torch.Tensor, k: int | None = None, shares: tuple[float, float] = (1.0, 1.0)
    ) -> dict[str, torch.Tensor]:
        """``shares``: the rows' share of the global minibatch's (policy, anchor) normalisers, times the world size."""
        if self.config.stage == "g4u":
            from uae_reference.rl.g4u import g4u_loss

            return g4u_loss(self.model, rollout, rows, advantages, self.config, policy_weight=shares[0], anchor_weight=shares[1])
        from uae_reference.rl.u4g import u4g_step_loss

        out = u4g_step_loss(self.model, self._reference[0], rollout, rows, k, advantages, self.config)
        out["loss"] = shares[0] * out["loss"]
        return out


def process_state():
    """accelerate's process state, created the way :func:`train_rl_stage` needs it.

    Without CUDA, ``cpu=True`` makes accelerate join launched ranks over gloo (MULTI_CPU);
    the state is a singleton, so whoever touches it first must ask for the CPU.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _snapshot(params: list[nn.Parameter], sharding: str = "none") -> torch.Tensor:
    """The parameters' whole values, flattened (under sharding every rank must call)."""
    from uae_reference.rl.distributed import whole_values

    if not params:
        return torch.zeros(0)
    return torch.cat([v.flatten().float() for v in whole_values(params, sharding)])


def _tracking(config: RLConfig, out: Path) -> dict:
    """accelerate's tracker arguments for ``report_to`` (none: no arguments, today's Accelerator)."""
    from uae_reference.rl.distributed import check_trackers, report_targets

    names = report_targets(config.report_to)
    if not names:
        return {}
    check_trackers(names)
    from accelerate.utils import ProjectConfiguration

    return dict(log_with=names, project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "tracking")))


def _flat_config(config: RLConfig) -> dict:
    """The config as scalars (TensorBoard's hyperparameters take no lists, dicts or None)."""
    from dataclasses import asdict

    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in asdict(config).items()}


def _row_weights(model: UAEModel, rollout, config: RLConfig) -> torch.Tensor:
    """Each rollout row's weight in the loss's (policy, anchor) normalisers."""
    if isinstance(config, G4UConfig):
        from uae_reference.rl.g4u import g4u_row_weights

        return g4u_row_weights(model, rollout, config)
    return torch.ones(rollout.states.shape[0], 2, dtype=torch.float64)


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
    out = Path(config.output_dir)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        **_tracking(config, out),
    )
    from uae_reference.rl.distributed import resolve_sharding, rollout_runner

    sharding = resolve_sharding(config.sharding, accelerator)
    threads_before = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(config.to_json())
    set_seed(config.seed)
    started = time.time()

    # --- model, trainable module, reference, reward -------------------------------------------
    if model is not None and sharding != "none":
        from unified_bench.core.errors import ConfigError

        raise ConfigError("a sharded run loads its model from init_from on every rank; pass init_from, not a model")
    if model is None:
        if not config.init_from:
            from unified_bench.core.errors import ConfigError

            raise ConfigError("an RL stage starts from a checkpoint: set init_from (e.g. uae_reference/checkpoints/uae-tiny)")
        # bf16 runs hold the frozen weights in bf16 (the paper plan); what trains stays fp32
        dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float32
        model = UAEModel.from_pretrained(config.init_from, device=str(accelerator.device), dtype=dtype)
    module, params = configure_trainable(model, config)
    for p in params:
        p.data = p.data.float()
    if config.gradient_checkpointing:
        enable_checkpointing(model, module, config.stage)
    reference = ReferencePolicy(module, use_adapters=config.lora is not None)
    reward = ReconstructionReward(config.reward, device=str(accelerator.device))
    before = _snapshot(params)

    loss_module = PolicyLoss(model, config, reference)
    if sharding == "fsdp":  # in place: the trainable parameters are now sharded DTensors
        from uae_reference.rl.distributed import shard_fsdp

        shard_fsdp(loss_module, mixed_precision=config.mixed_precision)
        params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    warmup = config.warmup_steps * config.updates_per_step
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0)
    engine = None
    if sharding == "none":
        loss_module, optimizer = accelerator.prepare(loss_module, optimizer)
    elif sharding == "zero3":
        from uae_reference.rl.distributed import load_zero3_config, zero3_engine

        engine = loss_module = zero3_engine(loss_module, optimizer, load_zero3_config(accelerator))
    if config.report_to != "none":
        accelerator.init_trackers("unified-grpo", config=_flat_config(config), init_kwargs={"wandb": {"name": config.stage, "dir": str(out)}})

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

            # --- rollout (no gradient, unwrapped model, whole parameters) -----------------------
            with rollout_runner(loss_module, sharding, engine) as run:
                if isinstance(config, G4UConfig):
                    rollout = run(g4u_rollout, model, reference, reward, data, indices, config, step)
                else:
                    rollout = run(u4g_rollout, model, reward, data, indices, config, step)

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
            weights = _row_weights(model, rollout, config)
            stats: dict[str, list[float]] = {}
            for rows in chunks:
                values = _update(
                    accelerator, loss_module, optimizer, params, rollout, rows, local[rows], config, generator,
                    weights=weights[rows], sharding=sharding, engine=engine,
                )
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
            if accelerator.trackers and ((step + 1) % config.log_every == 0 or step + 1 == config.steps or step == 0):
                accelerator.log(row, step=step + 1)
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
        for tracker in accelerator.trackers:  # not end_training(): it would end the process group
            tracker.finish()

    # --- final checkpoint -------------------------------------------------------------------------
    after = _snapshot(params, sharding)
    changed = bool((after - before).abs().max() > 0) if params else False
    if world > 1:  # every rank records its weights: DDP must leave them identical
        import hashlib

        digest = hashlib.sha256(after.numpy().tobytes()).hexdigest()
        (out / f"weights-rank{rank}.sha256").write_text(digest + "\n")
    final_dir = out / FINAL_DIR
    accelerator.wait_for_everyone()
    if sharding == "none":
        if accelerator.is_main_process:
            trained = accelerator.unwrap_model(loss_module).model
            _write_final(trained, final_dir, config, out)
    else:
        from uae_reference.rl.distributed import full_state_dict

        # every rank gathers; the main one loads the whole weights into a plain copy and writes it
        inner = engine.module if engine is not None else loss_module
        state = full_state_dict(inner, sharding, is_main=accelerator.is_main_process)
        if accelerator.is_main_process:
            trained = UAEModel.from_pretrained(config.init_from)
            configure_trainable(trained, config)
            trained.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
            _write_final(trained, final_dir, config, out)
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


def _write_final(trained: UAEModel, final_dir: Path, config: RLConfig, out: Path) -> None:
    if final_dir.exists():
        shutil.rmtree(final_dir)
    trained.eval().save_pretrained(final_dir)  # merges the LoRA adapters into plain weights
    plot_curves([(config.stage, out / LOG_FILE)], out / PLOT_FILE, title=f"{config.stage.upper()} on Shapes")


def _update(
    accelerator, loss_module, optimizer, params, rollout, rows, advantages, config, generator, *, weights, sharding="none", engine=None
) -> dict[str, float]:
    """One optimiser step on the rollout rows ``rows``; returns the step's loss terms.

    The rows run in micro-batches of ``micro_batch_size`` (all at once by default). Each pass's
    loss is scaled by its share of the global minibatch's normalisers (``weights``: per row,
    summed over every rank) times the world size, because DDP, FSDP and ZeRO average gradients
    over ranks: the summed gradients are then exactly those of one process computing the loss of
    the global minibatch (with one process and one micro-batch every share is exactly 1).
    """
    world = accelerator.num_processes
    totals = accelerator.reduce(weights.sum(dim=0).to(accelerator.device), reduction="sum").cpu()
    totals = torch.where(totals > 0, totals, torch.ones_like(totals))
    local_total = weights[:, 0].sum().clamp(min=1e-12)
    micro = [torch.arange(len(rows))[part] for part in row_chunks(len(rows), config.micro_batch_size)]
    if isinstance(config, U4GConfig):
        # The rollout's stochastic steps (its SDE window), never the last hop (sigma_min ~ 1e-3
        # -> 0): its Gaussian is so narrow that the ratio is noise. Flow-GRPO's
        # timestep_fraction = 0.99 of 10 steps drops it the same way.
        candidates = rollout.train_steps
        n_train = max(1, round(config.train_fraction * len(candidates)))
        train_steps = sorted(candidates[i] for i in torch.randperm(len(candidates), generator=generator)[:n_train].tolist())
        passes = [(part, k) for k in train_steps for part in micro]
    else:
        n_train = 1
        passes = [(part, None) for part in micro]
    terms: dict[str, float] = {}
    for i, (part, k) in enumerate(passes):
        last = i == len(passes) - 1
        share = world * weights[part].sum(dim=0) / totals
        # gradients of every pass are summed locally and all-reduced once (DDP); FSDP and ZeRO-3
        # reduce-scatter at every backward and accumulate the shards
        sync = nullcontext() if (last or sharding != "none") else accelerator.no_sync(loss_module)
        with sync:
            out = loss_module(rollout, rows[part], advantages[part], k, (float(share[0]), float(share[1])))
            if engine is not None:
                engine.set_gradient_accumulation_boundary(last)
                engine.backward(out["loss"] / n_train)
            else:
                accelerator.backward(out["loss"] / n_train)
        # the logged terms: the loss as scaled (its mean over ranks is the global minibatch's), the
        # others as each micro-batch's mean weighted by its share of this rank's rows
        local_share = float(weights[part, 0].sum() / local_total) if len(passes) > n_train else 1.0
        for key, value in out.items():
            scale = 1.0 if key == "loss" else local_share
            terms[key] = terms.get(key, 0.0) + float(value.detach()) * scale / n_train
    if engine is not None:  # clips (the config's gradient_clipping), steps and zeroes the gradients
        engine.step()
        grad_norm = engine.get_global_grad_norm() or 0.0
    else:
        grad_norm = _clip(accelerator, params, config.max_grad_norm, sharding)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    terms["grad_norm"] = float(grad_norm)
    return terms


def _clip(accelerator, params, max_norm: float, sharding: str):
    if max_norm <= 0:
        return torch.tensor(0.0)
    if sharding == "fsdp":  # DTensor gradients: torch's clip all-reduces the norm across the shards
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    return accelerator.clip_grad_norm_(params, max_norm)


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
