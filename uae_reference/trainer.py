"""One config-driven trainer for every stage, on one CPU or many GPUs through ``accelerate``.

Read :func:`train_stage` top to bottom:

1. an ``Accelerator`` (plain on one process; DDP under ``accelerate launch``; DeepSpeed or
   FSDP from the yaml files in ``uae_reference/configs/``);
2. the model — the previous stage's ``final/`` folder, or a fresh preset model built from
   ``seed`` (identical on every rank) — and the stage's trainable parameters (LoRA injected
   where the stage uses it);
3. AdamW with linear warm-up and cosine decay, stepped once per optimiser step;
4. if ``output_dir/state`` exists, ``accelerator.load_state`` resumes weights, optimiser,
   schedule and step; per-step randomness is a pure function of (seed, step, rank), so the
   resumed run continues exactly where it stopped;
5. the loop: batch indices and captions for (seed, step, rank), the stage's loss
   (:mod:`uae_reference.stages`), backward (gradients all-reduced across ranks), clip, step;
   a CSV row every ``log_every`` steps (losses averaged over ranks), a resumable state every
   ``save_every`` steps, an optional held-out evaluation every ``eval_every`` steps;
6. at the end, LoRA merged and the model written to ``output_dir/final`` plus a loss plot.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from unified_bench.core.errors import WeightsNotFoundError
from uae_reference.config import TrainConfig
from uae_reference.data import ShapesTrainingSet, batch_indices, encode_all, step_generator
from uae_reference.model import UAEModel
from uae_reference.stages import STAGE_TERMS, StageModule, configure_trainable, make_batch

#: torch's own thread count, read before any stage changes it: ``num_threads=0`` restores it, so a
#: stage that follows a one-thread stage in the same process (the tiny recipe's decoder after the
#: side-by-side sft) gets every core back
DEFAULT_NUM_THREADS = torch.get_num_threads()


def apply_num_threads(num_threads: int) -> None:
    """Set torch's intra-op threads for a stage: ``num_threads``, or torch's default when 0."""
    torch.set_num_threads(num_threads if num_threads > 0 else DEFAULT_NUM_THREADS)

STATE_DIR = "state"
FINAL_DIR = "final"
LOG_FILE = "log.csv"
PLOT_FILE = "log.png"


@dataclass
class StageResult:
    """What a finished stage produced."""

    stage: str
    output_dir: Path
    final_dir: Path
    steps: int
    seconds: float
    first_loss: float
    last_loss: float
    log_path: Path
    evals: list[dict] = field(default_factory=list)


def lr_lambda(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def parameter_groups(params: list[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """Decay matrices; never biases, norms or embeddings' 1-D vectors."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def load_or_build_model(config: TrainConfig) -> UAEModel:
    """The previous stage's checkpoint, or a fresh model of the preset (seeded)."""
    if config.init_from:
        model = UAEModel.from_pretrained(config.init_from)
        if config.vae_from:
            from diffusers import AutoencoderKL

            vae_dir = Path(config.vae_from) / "vae"
            if not vae_dir.is_dir():
                raise WeightsNotFoundError(f"vae_from={config.vae_from!r} has no vae/ folder; pass a vae stage's final/ checkpoint")
            model.vae = AutoencoderKL.from_pretrained(vae_dir)
        return model.train()
    from uae_reference.presets import MODEL_PRESETS

    if config.preset == "tiny":
        return MODEL_PRESETS["tiny"].build(seed=config.seed).train()
    return MODEL_PRESETS[config.preset].build().train()


class CsvLog:
    """Append-only per-step CSV; on resume, rows past the resumed step are dropped."""

    def __init__(self, path: Path, columns: list[str], resume_step: int) -> None:
        self.path = path
        self.columns = columns
        rows = []
        if resume_step > 0 and path.exists():
            with path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in columns} for r in rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow({k: row.get(k, "") for k in self.columns})


def read_log(path: Path) -> list[dict[str, float]]:
    with Path(path).open(newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def plot_log(log_path: Path, out_path: Path, title: str) -> Path:
    """Loss terms (and evaluation columns, if any) against step, as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    loss_keys = [k for k in ("loss", "semantic", "flow", "caption", "reconstruction") if any(k in r for r in rows)]
    eval_keys = sorted({k for r in rows for k in r if k.startswith("eval_")})
    panels = 1 + bool(eval_keys)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    for key in loss_keys:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        axes[0][0].plot(*zip(*pts), label=key)
    axes[0][0].set_xlabel("step")
    axes[0][0].set_ylabel("loss")
    axes[0][0].set_yscale("log")
    axes[0][0].legend()
    axes[0][0].set_title(title)
    if eval_keys:
        for key in eval_keys:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            axes[0][1].plot(*zip(*pts), marker="o", label=key[5:])
        axes[0][1].set_xlabel("step")
        axes[0][1].set_ylim(0, 1.02)
        axes[0][1].legend()
        axes[0][1].set_title("held-out evaluation (val)")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def stage_evaluation(model: UAEModel, stage: str, n: int) -> dict[str, float]:
    """Quick held-out numbers for the learning curve (val split, not the test split)."""
    from uae_reference.evaluate import decoder_quality, encoder_quality, test_samples

    samples = test_samples(n, split="val")
    out: dict[str, float] = {}
    was_training = model.training
    model.eval()
    if stage in ("sft", "coldstart"):
        quality = encoder_quality(model, samples)
        out["eval_caption_precision"] = quality.precision.value
        out["eval_long_fraction"] = quality.long_fraction.value
    if stage in ("decoder", "coldstart"):
        out["eval_decoder_f1"] = decoder_quality(model, samples).f1.value
    model.train(was_training)
    return out


def train_stage(
    config: TrainConfig,
    *,
    model: UAEModel | None = None,
    show_progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
) -> StageResult:
    """Run (or resume) one stage; returns where its final checkpoint is."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed

    accelerator = Accelerator(
        # without a visible GPU, ask for the CPU explicitly: ranks started by the torch
        # launcher (`accelerate launch --multi_gpu`) then join one gloo group
        cpu=not torch.cuda.is_available(),
        mixed_precision=config.mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )
    apply_num_threads(config.num_threads)
    out = Path(config.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(config.to_json())
    set_seed(config.seed)

    # --- model, trainable parameters, optimiser -------------------------------------------
    model = model if model is not None else load_or_build_model(config)
    if config.gradient_checkpointing:
        model.encoder.gradient_checkpointing_enable()
        model.decoder.enable_gradient_checkpointing()
    params = configure_trainable(model, config)
    semantic = None
    if config.stage == "coldstart":
        from uae_reference.semantic import build_semantic_embedder

        semantic = build_semantic_embedder(config.semantic_metric, device=accelerator.device, resolution=config.semantic_resolution)
    module = StageModule(model, config, semantic).train()
    optimizer = torch.optim.AdamW(parameter_groups(params, config.weight_decay), lr=config.learning_rate, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_lambda(s, warmup=config.warmup_steps, total=config.steps, min_ratio=config.min_lr_ratio),
    )
    # The schedule is not prepared: accelerate would step it once per process.
    module, optimizer = accelerator.prepare(module, optimizer)
    accelerator.register_for_checkpointing(schedule)

    # --- data --------------------------------------------------------------------------------
    with accelerator.main_process_first():
        data = ShapesTrainingSet.load(
            config.train_split, model.settings.image_size, config.train_samples, encoder_size=model.settings.encoder_image_size
        )
    if model.vae is not None and config.stage in ("decoder", "coldstart"):
        # the VAE is frozen in these stages: encode the training images once, not every step
        data.latents = encode_all(model, data.images)

    # --- resume ------------------------------------------------------------------------------
    start_step = 0
    state_dir = out / STATE_DIR
    if (state_dir / "step.json").exists():
        accelerator.load_state(str(state_dir))
        start_step = json.loads((state_dir / "step.json").read_text())["step"]
    terms = list(STAGE_TERMS[config.stage])
    eval_columns = {
        "sft": ["eval_caption_precision", "eval_long_fraction"],
        "vae": [],
        "decoder": ["eval_decoder_f1"],
        "coldstart": ["eval_caption_precision", "eval_long_fraction", "eval_decoder_f1"],
    }[config.stage]
    columns = ["step", "lr", "loss", *terms, "grad_norm", "seconds_per_step", "elapsed"] + eval_columns
    log = CsvLog(out / LOG_FILE, columns, start_step) if accelerator.is_main_process else None

    # --- loop --------------------------------------------------------------------------------
    progress = None
    if show_progress and accelerator.is_main_process:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn(f"[bold]{config.stage}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )
        progress.start()
        task = progress.add_task(config.stage, total=config.steps, completed=start_step, info="")
    started = time.time()
    first_loss = last_loss = float("nan")
    evals: list[dict] = []
    window_start, window_steps = time.time(), 0
    try:
        for step in range(start_step, config.steps):
            generator = step_generator(config.seed, step, accelerator.process_index)
            indices = batch_indices(
                len(data), config.batch_size, seed=config.seed, step=step,
                rank=accelerator.process_index, world_size=accelerator.num_processes,
            )
            batch = make_batch(data, indices, config, generator, step)
            with accelerator.autocast():
                losses = module(batch, generator)
            accelerator.backward(losses["loss"])
            grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm) if config.max_grad_norm > 0 else torch.tensor(0.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            window_steps += 1

            done = step + 1
            if done % config.log_every == 0 or done == config.steps or step == start_step:
                values = torch.stack([losses["loss"].detach(), *[losses[t].detach() for t in terms]]).float()
                values = accelerator.reduce(values, reduction="mean")
                row = {
                    "step": done,
                    "lr": schedule.get_last_lr()[0],
                    "loss": values[0].item(),
                    **{t: values[i + 1].item() for i, t in enumerate(terms)},
                    "grad_norm": float(grad_norm),
                    "seconds_per_step": (time.time() - window_start) / max(1, window_steps),
                    "elapsed": time.time() - started,
                }
                window_start, window_steps = time.time(), 0
                if math.isnan(first_loss):
                    first_loss = row["loss"]
                last_loss = row["loss"]
                if config.eval_every and (done % config.eval_every == 0 or done == config.steps):
                    if accelerator.is_main_process:
                        scores = stage_evaluation(accelerator.unwrap_model(module).model, config.stage, config.eval_samples)
                        row.update(scores)
                        evals.append({"step": done, **scores})
                    accelerator.wait_for_everyone()
                if log is not None:
                    log.write(row)
                if on_step:
                    on_step(done, row)
                if progress is not None:
                    info = " ".join(f"{k}={row[k]:.4f}" for k in ["loss", *terms])
                    progress.update(task, completed=done, info=info)
            elif progress is not None:
                progress.update(task, completed=done)

            if config.save_every and done % config.save_every == 0 and done < config.steps:
                save_state(accelerator, state_dir, done)
    finally:
        if progress is not None:
            progress.stop()

    # --- final checkpoint ---------------------------------------------------------------------
    final_dir = out / FINAL_DIR
    accelerator.wait_for_everyone()
    if config.stage == "vae":
        calibrate_latents(accelerator.unwrap_model(module).model, data, config.latent_stat_samples)
    # every rank records a digest of the weights it ended with: equal digests = one DDP group
    digest = state_digest(accelerator.unwrap_model(module).model)
    (out / f"weights-rank{accelerator.process_index}.sha256").write_text(digest + "\n")
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(module).model
        if final_dir.exists():
            shutil.rmtree(final_dir)
        trained.eval().save_pretrained(final_dir)
        plot_log(out / LOG_FILE, out / PLOT_FILE, f"{config.preset} {config.stage}")
    accelerator.wait_for_everyone()
    # (no accelerator.end_training(): it destroys the process group, and `--stage all` runs the
    # next stage in the same processes)
    return StageResult(
        stage=config.stage,
        output_dir=out,
        final_dir=final_dir,
        steps=config.steps,
        seconds=time.time() - started,
        first_loss=first_loss,
        last_loss=last_loss,
        log_path=out / LOG_FILE,
        evals=evals,
    )


@torch.no_grad()
def calibrate_latents(model: UAEModel, data: ShapesTrainingSet, samples: int) -> tuple[float, float]:
    """Set the VAE's shift and scale so the decoder's latents have mean 0 and std 1 (as SD3's).

    Every rank computes the same numbers from the same first ``samples`` images.
    """
    vae = model.vae
    vae.register_to_config(shift_factor=0.0, scaling_factor=1.0)
    latents = encode_all(model, data.images[:samples])
    mean, std = float(latents.mean()), float(latents.std())
    vae.register_to_config(shift_factor=mean, scaling_factor=1.0 / std)
    return mean, std


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict (names, dtypes, shapes and bytes)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def save_state(accelerator, state_dir: Path, step: int) -> None:
    """A resumable checkpoint (weights, optimiser, schedule, RNG) and the step it belongs to."""
    accelerator.save_state(str(state_dir))
    if accelerator.is_main_process:
        (state_dir / "step.json").write_text(json.dumps({"step": step}) + "\n")
    accelerator.wait_for_everyone()
