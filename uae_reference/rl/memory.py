"""Per-GPU memory of the RL stages at paper scale: exact parameter counts, analytic activations.

``uae-reference rl train --preset paper --dry-run`` prints :func:`rl_dry_run`'s tables. Nothing
is loaded or trained: the paper preset's architectures are built from their configs on
PyTorch's ``meta`` device (:func:`uae_reference.presets.build_paper_model`), each stage's LoRA
is injected with ``peft`` exactly as training does, and the parameters are counted -- in total,
trainable, per FSDP unit (each transformer block) and in the root unit (everything outside a
block).

**Model of one GPU** (bytes; ``N`` GPUs; bf16 compute; AdamW; the stage's config gives the
batch sizes). Three parts, the peak being the held part plus the larger of the two phases:

- *held throughout*: the frozen weights in bf16 (sharded ``/N`` under FSDP or ZeRO-3, whole
  under DDP); the trainable (LoRA) weights in fp32, their fp32 gradients and AdamW's two fp32
  moments (``16 B`` per trainable parameter, sharded ``/N`` or whole); the reward model (CLIP
  ViT-L/14 image tower, fp32, replicated);
- *rollout* (no gradient): under sharding, the whole model gathered in bf16 (the rollout runs
  on whole parameters, :mod:`uae_reference.rl.distributed`); plus the largest of its phases:
  caption sampling (KV cache, and the per-step logits ``generate`` returns, bf16, then their
  fp32 copy), the teacher-forced log-probabilities of ``rollout_batch_size`` rows (the
  encoder's logits over the whole sequence, bf16, plus the caption positions in fp32 twice),
  decoder sampling of as many rows (one MMDiT block's working set, ``12`` hidden-size tensors per
  token, doubled by classifier-free guidance) and the VAE decode of as many 1024 px images;
  plus what the rollout keeps for the update (U4G: conditions and every SDE state);
- *update* (one micro-batch of ``micro_batch_size`` rows, gradient checkpointing on): per
  row, each block's input kept (``layers * tokens * width * 2 B``) plus one block recomputed
  (``tokens * width * factor * 2 B``; factor 34 for the MMDiT as in
  :mod:`uae_reference.accounting`, 20 for the LLM); G4U adds the logits (bf16 over the whole
  sequence, fp32 over the caption positions for the log-softmax, its output and its gradient);
  U4G doubles the decoder rows (guidance) and adds the reference pass (no gradient). Under
  sharding, two blocks' bf16 weights are in flight (the one running and the prefetched next)
  and the root unit is gathered;
- a fixed 2 GiB for the CUDA context and the allocator, and 10% fragmentation on the rest.

These are estimates to choose micro-batches and a plan, not measurements; the assumptions are
printed under each table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from uae_reference.accounting import (
    BF16,
    CLIP_L_VISION_PARAMS,
    CONTEXT_BYTES,
    FRAGMENTATION,
    GB,
    count,
    token_counts,
    transformer_activation_bytes,
)
from uae_reference.presets import PAPER_DECODER_CONFIG, PAPER_ENCODER_CONFIG, PAPER_SETTINGS, PAPER_VAE_CONFIG
from uae_reference.rl.config import G4UConfig, RLConfig

FP32 = 4
#: trainable parameter: fp32 weight + fp32 gradient + AdamW's two fp32 moments
TRAINABLE_BYTES = 4 * FP32
#: hidden-size tensors one MMDiT block holds at a time without a gradient (q, k, v, attention
#: output, the 4x MLP hidden, the residual stream and its normalised copy)
INFERENCE_BLOCK_FACTOR = 12
#: the usable memory of an "80 GB" GPU (A100/H100 80 GB report 81,559-81,920 MiB); we count 80 GiB
GPU_BYTES = 80 * GB
#: a plan "fits" when this share of the GPU is left free
HEADROOM = 0.10


@dataclass
class ParamCounts:
    """The paper preset's parameters, counted on the meta device."""

    total: int  # without LoRA
    encoder: int
    decoder: int
    vae: int
    projector: int
    lora: dict[str, int]  # stage -> adapter parameters it trains
    largest_unit: int  # the largest FSDP unit (a transformer block)
    root_unit: int  # everything outside the blocks
    units: int


@dataclass
class MemoryPlan:
    """One stage under one plan on one GPU: bytes per term."""

    stage: str
    sharding: str
    gpus: int
    params: int
    trainable: int
    held: dict[str, float]
    rollout: dict[str, float]
    update: dict[str, float]
    assumptions: list[str] = field(default_factory=list)

    @property
    def rollout_peak(self) -> float:
        return sum(self.held.values()) + sum(self.rollout.values())

    @property
    def update_peak(self) -> float:
        return sum(self.held.values()) + sum(self.update.values())

    @property
    def overhead(self) -> float:
        return CONTEXT_BYTES + FRAGMENTATION * max(self.rollout_peak, self.update_peak)

    @property
    def total(self) -> float:
        return max(self.rollout_peak, self.update_peak) + self.overhead

    @property
    def headroom(self) -> float:
        return GPU_BYTES - self.total

    @property
    def fits(self) -> bool:
        return self.headroom >= HEADROOM * GPU_BYTES


def paper_param_counts(stage_configs: dict[str, RLConfig]) -> ParamCounts:
    """Build the paper preset on the meta device and count it (each stage's LoRA from its config)."""
    from uae_reference.lora import DECODER_LORA_TARGETS, ENCODER_LORA_TARGETS, add_lora, lora_parameter_count
    from uae_reference.presets import build_paper_model
    from uae_reference.rl.distributed import FSDP_UNIT_CLASSES

    model = build_paper_model(meta=True)
    parts = {name: count(getattr(model, name)) for name in ("encoder", "decoder", "vae", "projector")}
    total = count(model)
    units = [m for m in model.modules() if type(m).__name__ in FSDP_UNIT_CLASSES]
    unit_sizes = [count(u) for u in units]
    lora: dict[str, int] = {}
    for stage, config in stage_configs.items():
        if config.lora is None:
            continue
        module = model.encoder if stage == "g4u" else model.decoder
        with torch.device("meta"):
            add_lora(module, config.lora, ENCODER_LORA_TARGETS if stage == "g4u" else DECODER_LORA_TARGETS)
        lora[stage] = lora_parameter_count(module)
    return ParamCounts(
        total=total, **parts, lora=lora, largest_unit=max(unit_sizes), root_unit=total - sum(unit_sizes), units=len(units)
    )


def _trainable(stage: str, config: RLConfig, counts: ParamCounts) -> int:
    if config.lora is not None:
        return counts.lora[stage]
    return counts.encoder if stage == "g4u" else counts.decoder


def _decoder_tokens() -> tuple[int, int]:
    tokens = token_counts()
    return tokens["decoder_tokens"], PAPER_DECODER_CONFIG["caption_projection_dim"]


def decoder_inference_bytes(rows: int) -> float:
    """One MMDiT block's working set for ``rows`` decoder rows without a gradient."""
    tokens, width = _decoder_tokens()
    return rows * tokens * width * INFERENCE_BLOCK_FACTOR * BF16


def vae_decode_inference_bytes(images: int, size: int = PAPER_SETTINGS.image_size) -> float:
    """Peak of a VAE decode without a gradient: at full resolution, the nearest-upsampled map of the
    second-to-last up block, its convolution (both with that block's channels) and the last
    block's first feature map."""
    channels = PAPER_VAE_CONFIG["block_out_channels"]  # the decoder runs them in reverse
    return images * size * size * (2 * channels[1] + channels[0]) * BF16


def caption_sampling_bytes(rows: int) -> float:
    """``generate`` of ``rows`` captions: KV cache of the whole sequence, the per-step logits it
    returns (bf16) and their fp32 copy with its log-softmax."""
    text, tokens = PAPER_ENCODER_CONFIG["text_config"], token_counts()
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    kv = rows * tokens["caption_turn_tokens"] * text["num_hidden_layers"] * 2 * text["num_key_value_heads"] * head_dim * BF16
    logits = rows * tokens["caption_tokens"] * text["vocab_size"] * (BF16 + 2 * FP32)
    return kv + logits


def teacher_forcing_bytes(rows: int) -> float:
    """Teacher-forced log-probabilities without a gradient: logits over the whole sequence (bf16),
    the caption positions in fp32 and their log-softmax."""
    text, tokens = PAPER_ENCODER_CONFIG["text_config"], token_counts()
    return rows * text["vocab_size"] * (tokens["caption_turn_tokens"] * BF16 + tokens["caption_tokens"] * 2 * FP32)


def rl_memory_plan(stage: str, config: RLConfig, counts: ParamCounts, *, gpus: int = 8, sharding: str = "fsdp") -> MemoryPlan:
    """The per-GPU memory of ``stage`` under ``sharding`` ("none", "fsdp" or "zero3")."""
    sharded = sharding != "none"
    shard = gpus if sharded else 1
    trainable = _trainable(stage, config, counts)
    params = counts.total + (trainable if config.lora is not None else 0)
    frozen = params - trainable
    rows = config.prompts_per_step * config.group_size  # rollout rows per GPU per step
    minibatch = rows // config.updates_per_step
    micro = config.micro_batch_size or minibatch
    roll = config.rollout_batch_size or rows
    cfg = 2  # the paper decoder runs guidance 5.0: conditional and unconditional rows
    tokens = token_counts()
    text = PAPER_ENCODER_CONFIG["text_config"]
    dec_tokens, dec_width = _decoder_tokens()
    latent = PAPER_DECODER_CONFIG["in_channels"] * (PAPER_SETTINGS.image_size // 8) ** 2

    held = {
        f"frozen weights (bf16{', /N' if sharded else ', whole'})": frozen * BF16 / shard,
        f"trainable weights, gradients, AdamW (fp32, 16 B each{', /N' if sharded else ''})": trainable * TRAINABLE_BYTES / shard,
        "reward model (CLIP ViT-L/14 image tower, fp32)": CLIP_L_VISION_PARAMS * FP32,
    }
    rollout: dict[str, float] = {}
    if sharded:
        rollout["whole model gathered for the rollout (bf16)"] = params * BF16
    decode = decoder_inference_bytes(cfg * roll) + vae_decode_inference_bytes(roll)
    if isinstance(config, G4UConfig):
        phases = {
            f"caption sampling ({rows} captions)": caption_sampling_bytes(rows),
            f"teacher-forced log-probs ({roll} captions)": teacher_forcing_bytes(roll),
            f"reconstruction ({roll} rows x 2 guidance + VAE decode)": decode,
        }
    else:
        kept_states = rows * (config.sde_steps + 1) * latent * BF16
        conditions = cfg * rows * tokens["condition_tokens"] * PAPER_DECODER_CONFIG["joint_attention_dim"] * BF16
        rollout[f"kept for the update: {rows} x {config.sde_steps + 1} SDE states + conditions"] = kept_states + conditions
        phases = {
            f"caption sampling ({config.prompts_per_step} captions)": caption_sampling_bytes(config.prompts_per_step),
            f"SDE sampling ({roll} rows x 2 guidance + VAE decode)": decode,
        }
    name, value = max(phases.items(), key=lambda kv: kv[1])
    rollout[f"largest phase: {name}"] = value

    update: dict[str, float] = {}
    if sharded:
        update["two blocks in flight + the root unit gathered (bf16)"] = (2 * counts.largest_unit + counts.root_unit) * BF16
    if isinstance(config, G4UConfig):
        llm = transformer_activation_bytes(text["num_hidden_layers"], tokens["caption_turn_tokens"], text["hidden_size"], 20)
        logits = text["vocab_size"] * (tokens["caption_turn_tokens"] * BF16 + tokens["caption_tokens"] * 3 * FP32)
        update[f"activations ({micro} captions, checkpointed LLM + logits)"] = micro * (llm + logits)
    else:
        dec = transformer_activation_bytes(PAPER_DECODER_CONFIG["num_layers"], dec_tokens, dec_width)
        update[f"activations ({micro} trajectories x 2 guidance, checkpointed MMDiT)"] = micro * cfg * dec
        update["reference pass (no gradient)"] = decoder_inference_bytes(cfg * micro)
    if not config.gradient_checkpointing:
        update["[gradient_checkpointing is off: activations are estimated as if it were on]"] = 0.0
    assumptions = [
        f"{gpus} GPUs; {config.prompts_per_step} prompts x {config.group_size} = {rows} rollout rows per GPU per step; "
        f"{config.updates_per_step} update(s) per step of {minibatch} rows in micro-batches of {micro}; "
        f"decoder sampling and VAE decode in batches of {roll}",
        f"1024 px images: {dec_tokens} decoder tokens (4096 image + {tokens['condition_tokens']} text) of width {dec_width}; "
        f"encoder sequence {tokens['caption_turn_tokens']} tokens ({tokens['image_llm_tokens']} image + 64 prompt + "
        f"{tokens['caption_tokens']} caption), vocabulary {text['vocab_size']:,}",
        f"FSDP units: {counts.units} blocks (largest {counts.largest_unit:,} parameters), root unit {counts.root_unit:,}",
    ]
    return MemoryPlan(stage, sharding, gpus, params, trainable, held, rollout, update, assumptions)


@dataclass
class RLDryRun:
    counts: ParamCounts
    plans: list[MemoryPlan]


def rl_dry_run(stage_configs: dict[str, RLConfig], *, gpus: int = 8, shardings: tuple[str, ...] = ("fsdp", "none")) -> RLDryRun:
    """Count the paper preset on the meta device and size every stage under every plan."""
    counts = paper_param_counts(stage_configs)
    plans = [rl_memory_plan(stage, config, counts, gpus=gpus, sharding=s) for stage, config in stage_configs.items() for s in shardings]
    return RLDryRun(counts, plans)


def gib(value: float) -> str:
    return f"{value / GB:.1f}"

