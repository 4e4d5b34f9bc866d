"""The paper preset's dry run: parameter counts, trainable (LoRA) counts and a memory plan.

Everything here runs on PyTorch's ``meta`` device — architectures built from the configs in
:mod:`uae_reference.presets`, LoRA injected with ``peft`` exactly as training does — so it
needs no download and no GPU, and takes seconds.

**Memory model** (per GPU, bytes; ``N`` = data-parallel GPUs, DeepSpeed ZeRO stage 2):

- weights: every parameter in bf16, replicated (2 B/param);
- trainable parameters: fp32 master copy + Adam's two moments (12 B/param), sharded over N
  by ZeRO (stage 1 shards the optimiser, stage 2 also the gradients);
- gradients: bf16 (2 B/param), sharded over N, plus the reduce buckets (5e8 elements, 1 GB);
- activations, with gradient checkpointing (one block's inputs kept per block, one block
  recomputed at a time), per sample in the micro-batch:

  * MMDiT: ``L * T * D * 2 B`` kept + ``T * D * 34 * 2 B`` for the block being recomputed
    (q, k, v, attention output, 4x MLP, adaptive-norm modulations; SDPA keeps no T x T
    matrix), ``T`` = image + text tokens;
  * encoder LLM (trained stages only): the same rule with the LLM's width, plus fp32
    log-softmax over the vocabulary for the caption tokens (``C * V * 4 B * 2``);
  * VAE decoder (cold start: the predicted clean latents are decoded with gradients): each
    up-block resnet's input kept, one resnet recomputed (6 feature maps);
  * frozen forward-only parts (vision tower, encoder in stage 1, CLIP, reference images)
    hold no activations beyond their outputs;

- a fixed 2 GB for the CUDA context and allocator slack, and 10% fragmentation on the rest.

These are estimates to choose a micro-batch and a ZeRO stage, not guarantees; the figures
the dry run prints say which term dominates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from uae_reference.config import PAPER_STAGES, TrainConfig
from uae_reference.lora import DECODER_LORA_TARGETS, ENCODER_LORA_TARGETS, add_lora, lora_parameter_count
from uae_reference.presets import (
    PAPER_DECODER_CONFIG,
    PAPER_ENCODER_CONFIG,
    PAPER_SETTINGS,
    PAPER_VAE_CONFIG,
    PUBLISHED_PARAMS,
    build_paper_model,
)

GB = 1024**3
BF16 = 2
ADAM_FP32 = 12  # fp32 master weight + two fp32 moments
REDUCE_BUCKET_BYTES = 5e8 * BF16
CONTEXT_BYTES = 2 * GB
FRAGMENTATION = 0.10
#: CLIP ViT-L/14 vision tower + projection (the paper-scale semantic embedding), for its weights
CLIP_L_VISION_PARAMS = 303_966_976


def count(module: torch.nn.Module) -> int:
    """Parameters of ``module``, shared (tied) tensors counted once."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@dataclass
class ComponentCount:
    name: str
    params: int
    published: float | None = None

    @property
    def deviation(self) -> float | None:
        return None if self.published is None else self.params / self.published - 1.0


@dataclass
class StagePlan:
    stage: str
    trainable: dict[str, int]
    micro_batch: int
    gpus: int
    memory_terms: dict[str, float]  # bytes per GPU

    @property
    def total_bytes(self) -> float:
        return sum(self.memory_terms.values())

    @property
    def trainable_total(self) -> int:
        return sum(self.trainable.values())


@dataclass
class DryRunReport:
    components: list[ComponentCount]
    lora: dict[str, int]
    plans: list[StagePlan] = field(default_factory=list)


def token_counts() -> dict[str, int]:
    """Sequence lengths of the paper setting (1024 px images, 512-token captions)."""
    size = PAPER_SETTINGS.image_size
    vis = PAPER_ENCODER_CONFIG["vision_config"]
    merged = (size // vis["patch_size"] // vis["spatial_merge_size"]) ** 2  # LLM tokens per image
    latent = size // 8 // PAPER_DECODER_CONFIG["patch_size"]
    return {
        "image_llm_tokens": merged,
        "caption_tokens": PAPER_SETTINGS.max_caption_tokens,
        "caption_turn_tokens": merged + 64 + PAPER_SETTINGS.max_caption_tokens,  # image + instruction + answer
        "condition_tokens": PAPER_SETTINGS.condition_length,
        "decoder_tokens": latent * latent + PAPER_SETTINGS.condition_length,
    }


def transformer_activation_bytes(layers: int, tokens: int, width: int, per_block_factor: int = 34) -> float:
    """Checkpointed activations of one sample: kept block inputs + one recomputed block."""
    return layers * tokens * width * BF16 + tokens * width * per_block_factor * BF16


def vae_decode_activation_bytes(image_size: int) -> float:
    """Checkpointed VAE-decoder activations of one image (each up-resnet input + one resnet)."""
    channels = PAPER_VAE_CONFIG["block_out_channels"][::-1]  # 512, 512, 256, 128 from the bottom up
    side = image_size // 8
    kept, largest = 0.0, 0.0
    for level, ch in enumerate(channels):
        elements = side * side * ch
        kept += (PAPER_VAE_CONFIG["layers_per_block"] + 1) * elements
        largest = max(largest, 6 * elements)
        if level < len(channels) - 1:
            side *= 2
    return (kept + largest) * BF16


def stage_plan(config: TrainConfig, components: dict[str, int], lora: dict[str, int], gpus: int) -> StagePlan:
    text = PAPER_ENCODER_CONFIG["text_config"]
    tokens = token_counts()
    b = config.batch_size
    trainable: dict[str, int] = {}
    activations = 0.0
    dec_act = transformer_activation_bytes(
        PAPER_DECODER_CONFIG["num_layers"], tokens["decoder_tokens"], PAPER_DECODER_CONFIG["caption_projection_dim"]
    )
    llm_act = transformer_activation_bytes(text["num_hidden_layers"], tokens["caption_turn_tokens"], text["hidden_size"], 20)
    logit_act = tokens["caption_tokens"] * text["vocab_size"] * 4 * 2
    if config.stage == "decoder":
        trainable = {"decoder (full)": components["decoder"], "projector": components["projector"]}
        activations = b * dec_act
    elif config.stage == "sft":
        trainable = {"encoder LoRA": lora["encoder"]}
        activations = b * (llm_act + logit_act)
    else:
        trainable = {"encoder LoRA": lora["encoder"], "decoder LoRA": lora["decoder"], "projector": components["projector"]}
        # two decoder passes (semantic + flow), the caption CE pass, the condition pass,
        # and the differentiable VAE decode of the predicted clean latents
        cond_act = transformer_activation_bytes(text["num_hidden_layers"], tokens["condition_tokens"], text["hidden_size"], 20)
        activations = b * (2 * dec_act + llm_act + logit_act + cond_act + vae_decode_activation_bytes(PAPER_SETTINGS.image_size))
    weights = sum(components.values()) + (CLIP_L_VISION_PARAMS if config.stage == "coldstart" else 0)
    n_train = sum(trainable.values())
    terms = {
        "weights (bf16, replicated)": weights * BF16,
        "optimizer (fp32 master + Adam, /N)": n_train * ADAM_FP32 / gpus,
        "gradients (bf16, /N) + buckets": n_train * BF16 / gpus + min(REDUCE_BUCKET_BYTES, n_train * BF16),
        f"activations (micro-batch {b}, checkpointed)": activations,
    }
    terms["context + fragmentation"] = CONTEXT_BYTES + FRAGMENTATION * sum(terms.values())
    return StagePlan(config.stage, trainable, b, gpus, terms)


def dry_run(gpus: int = 8) -> DryRunReport:
    """Count the paper preset on the meta device and size each stage's memory on ``gpus`` GPUs."""
    model = build_paper_model(meta=True)
    components = {
        "encoder": count(model.encoder),
        "decoder": count(model.decoder),
        "vae": count(model.vae),
        "projector": count(model.projector),
    }
    add_lora(model.encoder, PAPER_STAGES["coldstart"].encoder_lora, ENCODER_LORA_TARGETS)
    add_lora(model.decoder, PAPER_STAGES["coldstart"].decoder_lora, DECODER_LORA_TARGETS)
    lora = {"encoder": lora_parameter_count(model.encoder), "decoder": lora_parameter_count(model.decoder)}
    report = DryRunReport(
        components=[
            ComponentCount("encoder: Qwen2.5-VL-3B-Instruct", components["encoder"], PUBLISHED_PARAMS["encoder"]),
            ComponentCount("  of which vision tower", count(model.encoder.model.visual)),
            ComponentCount("decoder: SD3.5-large MMDiT", components["decoder"], PUBLISHED_PARAMS["decoder"]),
            ComponentCount("VAE (SD3.5 AutoencoderKL)", components["vae"]),
            ComponentCount("projector (MLP)", components["projector"]),
        ],
        lora=lora,
    )
    for stage in ("decoder", "sft", "coldstart"):
        report.plans.append(stage_plan(PAPER_STAGES[stage], components, lora, gpus))
    return report
