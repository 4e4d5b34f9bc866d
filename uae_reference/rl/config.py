"""Configuration of the two Unified-GRPO stages: documented dataclasses and each preset's values.

Every field carries a ``#:`` comment that says what it does and where its value comes from;
``uae-reference rl help-config`` prints them and ``docs/unified-grpo.md`` tabulates them next
to the values of the UAE paper (arXiv 2509.09666) and Flow-GRPO (arXiv 2505.05470). Sources:

- [UAE]       the UAE paper and its official release, as summarised in DESIGN.md §4;
- [FG-code]   Flow-GRPO's official code, ``yifan123/flow_grpo`` ``config/base.py`` and
              ``config/grpo.py`` (the SD3.5 recipes ``geneval_sd3``, ``general_ocr_sd3``,
              ``pickscore_sd3``) and ``scripts/train_sd3.py``;
- [TRL]       TRL's ``GRPOConfig`` defaults (``trl/trainer/grpo_config.py``);
- [GRPO]      DeepSeekMath (arXiv 2402.03300), where GRPO was introduced;
- [tiny]      chosen here for the CPU budget of the tiny preset (no external source).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uae_reference.lora import LoraSettings
from uae_reference.rl.grpo import NORMALISATIONS, STD_SCOPES
from uae_reference.rl.sde import KL_SCALES
from unified_bench.core.errors import ConfigError

RL_STAGES: tuple[str, ...] = ("g4u", "u4g")
#: Metrics that read the ground truth of a sample: evaluation only, never a reward.
FORBIDDEN_REWARDS: tuple[str, ...] = ("shapes-attr",)


@dataclass
class RewardSettings:
    """How a reconstruction is scored against its original (both stages)."""

    #: image metric whose pair score is the reward: an embedding metric (cosine) or a pixel
    #: metric; never ``shapes-attr`` (it reads the ground-truth scene: evaluation only).
    #: [UAE] CLIP-family similarity at paper scale; [tiny] ``effnet`` (offline real weights)
    metric: str = "effnet"
    #: the metric's checkpoint ("" = its registry default)
    checkpoint: str = ""
    #: images per metric forward pass
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.metric in FORBIDDEN_REWARDS:
            raise ConfigError(
                f"{self.metric} reads each sample's ground truth and is the held-out evaluation metric; "
                "it cannot be a reward (use effnet, clip, dinov2, ...)"
            )


@dataclass
class RLConfig:
    """Fields shared by both stages; saved as ``rl_config.json`` in the stage's output folder."""

    # --- what and where -----------------------------------------------------------------------
    #: "g4u" (encoder, GRPO on captions) or "u4g" (decoder, Flow-GRPO)
    stage: str = "g4u"
    #: checkpoint folder to start from (pre-RL ``uae-tiny`` for G4U, G4U's ``final/`` for U4G)
    init_from: str = ""
    #: where ``log.csv``, ``curves.png``, ``samples.jsonl`` and ``final/`` go
    output_dir: str = "runs/uae-tiny-rl/g4u"
    #: seed of every rollout and update (a step's draws depend only on (seed, step, rank))
    seed: int = 0

    # --- rollouts -----------------------------------------------------------------------------
    #: rollout-and-update steps
    steps: int = 100
    #: prompts per step per process (images for G4U, captions for U4G)
    prompts_per_step: int = 8
    #: G, samples per prompt; the advantage baseline is their mean.
    #: [FG-code] 24 (``num_image_per_prompt``); [TRL] 8 (``num_generations``); [UAE] not stated
    group_size: int = 8
    #: optimiser steps per rollout batch (the batch is split into this many minibatches); with
    #: more than one, later minibatches are off-policy and the clip matters.
    #: [FG-code] 2 (gradients "updated twice per epoch"); [TRL] 1 (``num_iterations``)
    updates_per_step: int = 2

    # --- the GRPO objective -------------------------------------------------------------------
    #: how rewards are scaled after subtracting the group mean: "group" std, "batch" std, "none".
    #: [TRL] "group"; [FG-code] "batch" (``global_std=True`` in the SD3.5 recipes)
    std_scope: str = "group"
    #: added to the std before dividing (a constant-reward group gets zero advantage). [TRL] 1e-4
    advantage_eps: float = 1e-4
    #: advantages are clipped to [-max, max] (0 disables). [FG-code] 5 (``adv_clip_max``)
    advantage_clip: float = 5.0
    #: PPO clip range epsilon (low side). [TRL] 0.2; [FG-code] 1e-4 (``clip_range``)
    clip_low: float = 0.2
    #: PPO clip range on the high side (None: = clip_low). [TRL] None (DAPO suggests 0.28)
    clip_high: float | None = None
    #: weight of the KL penalty to the reference policy. [TRL] 0.0; [GRPO] 0.04;
    #: [FG-code] 0.04 (GenEval, OCR), 0.01 (PickScore) on its own KL scale (U4G: see kl_scale);
    #: [UAE] not stated
    beta: float = 0.04

    # --- optimisation -------------------------------------------------------------------------
    #: AdamW learning rate (constant after warm-up). [TRL] 1e-6 (full model); [FG-code] 3e-4 (LoRA)
    learning_rate: float = 1e-4
    #: AdamW weight decay. [FG-code] 1e-4; [TRL] 0.0
    weight_decay: float = 0.0
    #: linear warm-up steps before the constant learning rate
    warmup_steps: int = 0
    #: gradient-norm clipping threshold (0 disables). [FG-code] 1.0; [TRL] 1.0
    max_grad_norm: float = 1.0
    #: LoRA on the trained module (None: train the module's full weights, reference = frozen copy).
    #: [UAE] encoder r=32, alpha=64; [FG-code] decoder r=32, alpha=64
    lora: LoraSettings | None = None

    # --- data and reward ----------------------------------------------------------------------
    #: Shapes split of the training prompts (the test split is never trained on)
    train_split: str = "train"
    #: how many samples of the split to draw prompts from
    train_samples: int = 2000
    #: how a reconstruction is scored
    reward: RewardSettings = field(default_factory=RewardSettings)

    # --- bookkeeping --------------------------------------------------------------------------
    #: write a CSV row every this many steps
    log_every: int = 1
    #: keep this many (caption, reward) examples per logged step in samples.jsonl
    log_examples: int = 4
    #: torch threads per process (0: torch's default). [tiny] 1: on a shared 2-core CPU two
    #: threads per process spin-wait on each other (a smoke run measured 8x slower with 2)
    num_threads: int = 0
    #: mixed precision for accelerate ("no" on CPU, "bf16" on GPUs)
    mixed_precision: str = "no"
    #: where the curves also go, beside log.csv and curves.png: "none", "tensorboard", "wandb", or
    #: both comma-separated (accelerate's trackers; the ``report_to`` of transformers and TRL)
    report_to: str = "none"

    # --- scale-out (docs/rl-distributed.md); the defaults are one process holding everything ---
    #: how the model is spread over the processes: "auto" (as ``accelerate launch`` was configured:
    #: FSDP -> "fsdp", DeepSpeed ZeRO-3 -> "zero3", else "none"), "none" (every process holds the
    #: whole model, DDP averages gradients), "fsdp" (PyTorch FSDP2: weights, gradients and optimiser
    #: states sharded, one unit per transformer block), "zero3" (DeepSpeed ZeRO stage 3)
    sharding: str = "auto"
    #: rows (captions in G4U, trajectories in U4G) per forward/backward pass of an update; each
    #: micro-batch's loss is weighted by its share of the minibatch, so the gradients add up to the
    #: whole minibatch's (0: the whole minibatch in one pass). Memory, not maths
    micro_batch_size: int = 0
    #: rows per decoder sampling and VAE decoding batch in a rollout (0: all of a step's rows at once);
    #: every row has its own seeds, so this changes memory, not the draws
    rollout_batch_size: int = 0
    #: recompute each transformer block's activations in the backward pass instead of keeping them
    #: (the trained module only). [tiny] off; paper scale: on
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if isinstance(self.reward, dict):
            self.reward = RewardSettings(**self.reward)
        if self.stage not in RL_STAGES:
            raise ConfigError(f"unknown RL stage {self.stage!r}; choose g4u or u4g")
        if self.std_scope not in STD_SCOPES:
            raise ConfigError(f"std_scope must be one of {', '.join(STD_SCOPES)}")
        if self.group_size < 2:
            raise ConfigError("group_size must be at least 2: the advantage compares samples of a group")
        if (self.prompts_per_step * self.group_size) % self.updates_per_step:
            raise ConfigError("prompts_per_step * group_size must be divisible by updates_per_step")
        from uae_reference.rl.distributed import SHARDINGS, report_targets

        if self.sharding not in SHARDINGS:
            raise ConfigError(f"sharding must be one of {', '.join(SHARDINGS)}")
        if self.micro_batch_size < 0 or self.rollout_batch_size < 0:
            raise ConfigError("micro_batch_size and rollout_batch_size must be >= 0 (0: all at once)")
        report_targets(self.report_to)  # raises on an unknown tracker

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)


@dataclass
class G4UConfig(RLConfig):
    """Generation for Understanding: GRPO on the encoder's captions, decoder frozen."""

    stage: str = "g4u"
    output_dir: str = "runs/uae-tiny-rl/g4u"
    #: temperature of the rollout captions (the policy is softmax(logits / T)).
    #: [TRL] 1.0; [UAE] 0.7 at inference (official demo)
    temperature: float = 1.0
    #: most tokens per caption. [UAE] 512 (official demo); [tiny] 64
    max_caption_tokens: int = 64
    #: how per-token losses are reduced: "sequence" (GRPO), "token" (DAPO; [TRL] default), or
    #: "constant" (Dr. GRPO, divides by batch * max_caption_tokens)
    normalisation: str = "token"
    #: Euler steps of the frozen decoder when reconstructing a caption for its reward
    #: ([tiny] fewer than at evaluation, for speed); 0: the checkpoint's own
    reconstruction_steps: int = 10
    #: weight of the condition anchor: the mean squared change, from the reference policy, of
    #: the LLM's last hidden states of the rollout captions' "generate" turns -- the frozen
    #: decoder's condition. The LLM is shared: LoRA updates that change *what* the encoder says
    #: also change *how* it encodes text for the decoder, which the policy gradient cannot see
    #: (it reaches the LLM only through caption log-probabilities). 0 disables it.
    #: [tiny] 30 (measured: without it, 60 G4U steps took the decoder's F1 from ground-truth
    #: long captions from 0.43 to 0.22); not in [UAE], where LoRA r=32 at lr 1e-5 moves a 3B LLM little
    condition_anchor: float = 0.0
    #: what reconstructs a caption: "decoder" (the frozen UAE decoder: the method) or "renderer"
    #: (Shapes only: the track's exact renderer of the parsed caption, unknown attributes drawn
    #: from the group's seed — an ideal frozen decoder, for ablations and for checking G4U
    #: while a learned decoder is not available; it reads the caption, never the ground truth)
    reconstruction: str = "decoder"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"normalisation must be one of {', '.join(NORMALISATIONS)}")
        if self.reconstruction not in ("decoder", "renderer"):
            raise ConfigError("reconstruction must be 'decoder' or 'renderer'")


@dataclass
class U4GConfig(RLConfig):
    """Understanding for Generation: Flow-GRPO on the decoder, encoder frozen."""

    stage: str = "u4g"
    output_dir: str = "runs/uae-tiny-rl/u4g"
    #: temperature of the frozen encoder's captions (None: the checkpoint's own, as at evaluation)
    caption_temperature: float | None = None
    #: denoising steps of the SDE rollouts, fewer than at evaluation ("denoising reduction").
    #: [FG-code] 10 (``sample.num_steps``; 40 at evaluation)
    sde_steps: int = 10
    #: noise level a of sigma_t = a sqrt(t / (1 - t)). [FG-code] 0.7 (``noise_level``)
    noise_level: float = 0.7
    #: start every trajectory of a group from the same initial noise (the SDE increments still
    #: differ), as DanceGRPO does; False: each its own, as [FG-code]. Measured on Shapes (144
    #: rollout groups, the G4U checkpoint): the within-group correlation of the `effnet` reward
    #: with the oracle's render F1 rises from 0.27 to 0.33 when shared
    shared_initial_noise: bool = False
    #: SDE window (Flow-GRPO's ``sde_window_size``): only this many consecutive denoising steps
    #: are stochastic and trained on, the rest are the deterministic ODE, so the spread of a
    #: group's rewards comes from those steps alone. 0: every step stochastic. [FG-code] 0 in
    #: ``config/base.py``'s defaults (2 in its later "fast" recipes)
    sde_window_size: int = 0
    #: [low, high) denoising steps the window's start is drawn from, once per rollout step
    #: (None: all but the last). [FG-code] (0, 10)
    sde_window_range: tuple[int, int] | None = None
    #: fraction of the rollout's denoising steps trained on per update (drawn per update; the
    #: final hop to sigma = 0 is never trained on). [FG-code] 0.99 (``timestep_fraction``: 9 of 10)
    train_fraction: float = 1.0
    #: log-probabilities and KL per dimension ("mean", as Flow-GRPO: keeps the ratio near 1 for
    #: any image size) or the exact sum over dimensions ("sum")
    logprob_reduce: str = "mean"
    #: which KL term beta weighs, per denoising step (uae_reference.rl.sde.sde_step_kl):
    #: "exact", |mean - mean_ref|^2 / (2 g(t)^2 |dt|), the KL of the two Gaussians; or
    #: "flow-grpo", |mean - mean_ref|^2 / (2 g(t)^2), |dt| times smaller, the term [FG-code]'s
    #: train script adds and its beta (0.04) weighs. beta on the exact scale is beta / |dt| on
    #: Flow-GRPO's: the tiny preset's 0.04 (exact) is 0.36 on Flow-GRPO's scale (|dt| = 1/9)
    kl_scale: str = "exact"
    #: classifier-free guidance in rollouts and training (None: the checkpoint's).
    #: [FG-code] 4.5 for SD3.5-M; [tiny] the checkpoint's 1.0 (no unconditional branch)
    guidance_scale: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.train_fraction <= 1:
            raise ConfigError("train_fraction must be in (0, 1]")
        if self.noise_level <= 0:
            raise ConfigError("noise_level must be > 0 (a = 0 is the deterministic ODE, which has no log-probability)")
        if self.sde_window_range is not None:
            self.sde_window_range = tuple(self.sde_window_range)
            low, high = self.sde_window_range
            if not 0 <= low < high:
                raise ConfigError("sde_window_range must be (low, high) with 0 <= low < high")
        if self.sde_window_size < 0:
            raise ConfigError("sde_window_size must be >= 0")
        if self.logprob_reduce not in ("mean", "sum"):
            raise ConfigError("logprob_reduce must be 'mean' or 'sum'")
        if self.kl_scale not in KL_SCALES:
            raise ConfigError(f"kl_scale must be one of {', '.join(KL_SCALES)}")


CONFIG_CLASSES: dict[str, type[RLConfig]] = {"g4u": G4UConfig, "u4g": U4GConfig}

# --- presets -------------------------------------------------------------------------------------

#: The tiny recipe (CPU, Shapes): sizes chosen so both stages fit the 60-minute budget.
TINY_RL: dict[str, RLConfig] = {
    "g4u": G4UConfig(
        steps=60,
        prompts_per_step=8,
        group_size=8,
        updates_per_step=2,
        temperature=1.0,
        learning_rate=5e-4,
        beta=0.01,
        clip_low=0.2,
        std_scope="group",
        normalisation="token",
        lora=LoraSettings(r=16, alpha=32),
        reconstruction_steps=10,
        condition_anchor=30.0,
        num_threads=1,
    ),
    "u4g": U4GConfig(
        # Many images at a small learning rate, and a group whose spread comes from a known place.
        # The within-group reward spread is mostly where objects sit inside their cells
        # (unknowable from the caption), so a small batch's gradient is mostly noise (120 steps of
        # 4 x 8 at lr 1e-3 lowered the render F1). Each group starts from one noise and only an
        # SDE window of 2 of the first 5 steps is stochastic (and trained on): the reward's
        # within-group correlation with the oracle's render F1 rose from 0.27 to 0.38, and on the
        # val split `effnet` gained +0.0031 instead of +0.0006 (docs/unified-grpo.md). 480 steps
        # were chosen on the val split over 300 steps and over 320 steps of 6 captions (shapes-attr
        # F1 change +0.0135 vs +0.0121 and +0.0071); ~50 minutes on one core.
        steps=480,
        prompts_per_step=4,
        group_size=16,
        updates_per_step=2,
        sde_steps=10,
        noise_level=1.0,
        shared_initial_noise=True,
        sde_window_size=2,
        sde_window_range=(0, 5),
        train_fraction=1.0,
        learning_rate=3e-4,
        beta=0.04,  # on the exact KL scale, as the shipped uae-tiny was trained: 0.36 on Flow-GRPO's
        kl_scale="exact",
        clip_low=1e-3,
        std_scope="batch",
        lora=LoraSettings(r=16, alpha=32),
        num_threads=1,
    ),
}

#: Paper scale: the values of [UAE] and [FG-code] where they state them (see docs/unified-grpo.md).
PAPER_RL: dict[str, RLConfig] = {
    "g4u": G4UConfig(
        steps=1000,
        prompts_per_step=2,
        group_size=8,
        updates_per_step=1,
        temperature=1.0,
        max_caption_tokens=512,
        learning_rate=1e-5,
        beta=0.04,
        normalisation="token",
        lora=LoraSettings(r=32, alpha=64),
        reconstruction_steps=40,
        reward=RewardSettings(metric="clip"),
        mixed_precision="bf16",
        # sized by `uae-reference rl train --preset paper --dry-run` (docs/rl-distributed.md)
        micro_batch_size=4,
        rollout_batch_size=4,
        gradient_checkpointing=True,
    ),
    "u4g": U4GConfig(
        steps=1000,
        prompts_per_step=9,
        group_size=24,
        updates_per_step=2,
        sde_steps=10,
        noise_level=0.7,
        train_fraction=0.99,
        learning_rate=3e-4,
        weight_decay=1e-4,
        beta=0.04,  # Flow-GRPO's value, so on Flow-GRPO's KL scale
        kl_scale="flow-grpo",
        clip_low=1e-4,
        std_scope="batch",
        lora=LoraSettings(r=32, alpha=64),
        guidance_scale=5.0,
        reward=RewardSettings(metric="clip"),
        mixed_precision="bf16",
        micro_batch_size=4,
        rollout_batch_size=8,
        gradient_checkpointing=True,
    ),
}

#: Seconds-scale settings for CI: the same code path, a few steps, tiny batches.
SMOKE_OVERRIDES: dict[str, Any] = dict(steps=3, prompts_per_step=2, group_size=4, updates_per_step=2, train_samples=64, log_examples=1)
SMOKE_STAGE_OVERRIDES: dict[str, dict[str, Any]] = {"g4u": dict(reconstruction_steps=2), "u4g": dict(sde_steps=3)}


#: fields that say where a run reads and writes, not how it trains (left out of the preset table)
PLUMBING_FIELDS: tuple[str, ...] = ("stage", "init_from", "output_dir")


def _preset_cell(value: Any) -> str:
    if isinstance(value, LoraSettings):
        return f"r={value.r}, alpha={value.alpha}" + (f", dropout={value.dropout:g}" if value.dropout else "")
    if isinstance(value, RewardSettings):
        return value.metric + (f" ({value.checkpoint})" if value.checkpoint else "")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def preset_table_markdown() -> str:
    """Every field of both stages in the tiny and paper presets, as a Markdown table (the block
    ``docs/unified-grpo.md`` quotes; ``uae-reference rl help-config --markdown`` prints it)."""
    names = list(dict.fromkeys(f.name for cls in CONFIG_CLASSES.values() for f in dataclasses.fields(cls)))
    lines = ["| field | G4U tiny | U4G tiny | G4U paper | U4G paper |", "|---|---|---|---|---|"]
    for name in names:
        if name in PLUMBING_FIELDS:
            continue
        cells = [
            _preset_cell(getattr(table[stage], name)) if hasattr(table[stage], name) else "—"
            for table in (TINY_RL, PAPER_RL)
            for stage in ("g4u", "u4g")
        ]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rl_config(preset: str, stage: str, *, smoke: bool = False, **overrides: Any) -> RLConfig:
    """The preset's settings for ``stage`` with CI smoke settings and explicit overrides applied."""
    table = {"tiny": TINY_RL, "paper": PAPER_RL}.get(preset)
    if table is None:
        raise ConfigError(f"unknown preset {preset!r}; choose tiny or paper")
    if stage not in table:
        raise ConfigError(f"unknown RL stage {stage!r}; choose g4u or u4g")
    config = table[stage]
    if smoke:
        config = config.replace(**SMOKE_OVERRIDES, **SMOKE_STAGE_OVERRIDES[stage])
    return config.replace(**overrides)


def load_rl_config(path: str | Path) -> RLConfig:
    """Read a saved ``rl_config.json`` back into its class."""
    data = json.loads(Path(path).read_text())
    return CONFIG_CLASSES[data["stage"]](**data)
