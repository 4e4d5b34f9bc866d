"""Model presets: ``tiny`` (trained here on a CPU) and ``paper`` (the UAE paper's scale).

Both build the same :class:`~uae_reference.model.UAEModel` from the same classes:

============  ===========================================  ==========================================
component     tiny                                          paper
============  ===========================================  ==========================================
encoder       Qwen2_5_VLForConditionalGeneration, 2 layers  Qwen/Qwen2.5-VL-3B-Instruct (3.75B)
              of width 128, vision tower 2 x 64, 96 px
              in 16 px patches (9 visual tokens)
processor     word-level tokenizer of the Shapes grammar    the checkpoint's AutoProcessor
projector     MLP 128 -> 128 tokens (+ text positions),     MLP 2048 -> 4096 tokens, 2048 pooled
              64 pooled
decoder       SD3Transformer2DModel, 4 blocks of width      SD3.5-large transformer (8.1B), 38 blocks
              128, patch 4 over 12 x 12 x 8 latents,        of width 2432 over 128 x 128 x 16 latents,
              predicts the clean sample                     predicts the velocity
codec         AutoencoderKL 16-32-32 wide, 8 channels, /4,  SD3.5 AutoencoderKL (16 channels, /8)
              trained here (stage "vae"); images 48 px      images 1024 px
scheduler     FlowMatchEulerDiscreteScheduler, shift 1      FlowMatchEulerDiscreteScheduler, shift 3
============  ===========================================  ==========================================

**Why a small VAE for tiny, not pixels.** The first tiny decoders denoised RGB pixels in
6-8 px patches (108-192 values per token) with a 128-wide transformer. The noise of a
patch then fills most of the residual stream, and the model could not learn even the
easiest conditional map: given a perfect one-hot code of the scene, the clean image it
predicted from pure noise stayed the plain background for 600 steps (loss flat at the
background-only value). In the latent space of a small AutoencoderKL trained here (its own
stage, a few CPU minutes), the same test with a 4-channel VAE fell well below the
mean-latent loss within 300 steps (0.88 -> 0.51). The VAE is the SD3 VAE's class at 1/40 of
its width; its latents are rescaled by their measured mean and standard deviation
(``shift_factor`` and ``scaling_factor``), as SD3's are.

**Why one image token per grid cell.** The decoder reads the 12 x 12 x 8 latents in 4 x 4
patches: 3 x 3 image tokens, each exactly one cell of the Shapes grid, so binding "a small
cyan square in the top center" to the right place is one attention hop from the cell's token
to the caption. Measured on the same encoder and VAE (128 held-out scenes, object F1 from
ground-truth long captions): 2 x 2 patches (36 tokens) were still at F1 0.00 after 1,500
steps; 4 x 4 patches cost less per step, and their learning curve turns up at ~3,000 steps.

**Why noise levels centred at sigma 0.73** (``logit_mean=1`` in the decoder stage). Where the
objects go and what they are is decided at high noise; with SD3's logit-normal centred at 0.5,
fewer than 2% of training draws have sigma > 0.9, and after 1,000 steps the clean image the
decoder predicted from pure noise was *worse* than the mean latent (0.68 vs 0.58 squared
error). SD3 shifts its schedule toward high noise for the same reason at high resolution.

**Why the tiny decoder predicts the clean sample.** ``prediction="sample"``: the transformer's
output is read as ``x0_hat`` and the sampler, schedule and loss keep working in velocity
space through ``v = (x_t - x0_hat) / sigma`` (JiT, Li & He 2025, "Back to Basics: Let
Denoising Generative Models Denoise", argues for x-prediction whenever tokens are not tiny
next to the model width). The paper preset keeps SD3's velocity prediction.

The paper preset's architectures are written here as code (numbers from the checkpoints'
``config.json``), so they can be instantiated on PyTorch's ``meta`` device and counted without
downloading anything; :func:`build_paper_model` with ``pretrained=True`` loads the real weights
from the hub (or a local mirror) through the usual ``from_pretrained`` path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from unified_bench.core.protocol import OFFICIAL_CAPTION_PROMPT

from uae_reference.model import UAEModel, UAESettings
from uae_reference.projector import UAEProjector

# --- paper scale ------------------------------------------------------------------------------

PAPER_ENCODER_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
PAPER_DECODER_ID = "stabilityai/stable-diffusion-3.5-large"
#: Published sizes the dry run checks against (model cards: Qwen2.5-VL-3B-Instruct "3.75B
#: params" on its Hugging Face page; SD3.5 Large "8.1 billion parameter MMDiT").
PUBLISHED_PARAMS = {"encoder": 3.75e9, "decoder": 8.1e9}

#: Qwen2.5-VL-3B-Instruct config.json, as code.
PAPER_ENCODER_CONFIG: dict[str, Any] = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "tie_word_embeddings": True,
        "use_sliding_window": False,
        "sliding_window": 32768,
        "max_window_layers": 70,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_channels": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "hidden_act": "silu",
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": True,
}

#: stable-diffusion-3.5-large transformer/config.json, as code.
PAPER_DECODER_CONFIG: dict[str, Any] = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 38,
    "attention_head_dim": 64,
    "num_attention_heads": 38,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 2432,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 192,
    "qk_norm": "rms_norm",
    "dual_attention_layers": (),
}

#: stable-diffusion-3.5-large vae/config.json, as code.
PAPER_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}

#: The official demo's captioning instruction (one definition, in the benchmark's protocol).
PAPER_CAPTION_PROMPT = OFFICIAL_CAPTION_PROMPT
PAPER_SETTINGS = UAESettings(
    image_size=1024,
    latent_space="vae",
    caption_prompt=PAPER_CAPTION_PROMPT,
    max_caption_tokens=512,
    condition_length=576,  # 512 caption tokens + the "generate" turn's framing
    caption_temperature=0.7,
    num_inference_steps=40,
    guidance_scale=5.0,
    negative_caption="Generate a random, low quality, ugly, blur, bad and anime, cartoon image.",
    preset="paper",
)

# --- tiny scale -------------------------------------------------------------------------------

#: The tiny model generates 48 px images (the Shapes oracle reads 48 px renders of the test
#: split with F1 1.000, 32 px ones with 0.998) through a VAE with 4x downsampling: 12 x 12 x 8
#: latents, which the MMDiT sees in 4 x 4 patches as 3 x 3 image tokens of 128 values each:
#: one image token per cell of the Shapes grid (see "Why one image token per grid cell").
TINY_IMAGE_SIZE = 48
TINY_LATENT_SIZE = 12
TINY_LATENT_CHANNELS = 8
TINY_DECODER_PATCH = 4
#: The tiny encoder reads 96 px images in 16 px patches; merged 2 x 2, that is 3 x 3 visual
#: tokens, one per cell of the Shapes grid.
TINY_ENCODER_IMAGE_SIZE = 96
TINY_VISION_PATCH = 16
TINY_LLM_WIDTH = 128
#: Pixel normalisation of the tiny processor: the Shapes background colour is the mean, so a
#: background patch embeds to exactly zero and only objects carry signal. With CLIP's mean and
#: std the background is a large constant in every visual token, and a from-scratch LLM (RMSNorm
#: does not centre) takes hundreds of steps longer to read object colours through it.
TINY_IMAGE_MEAN = (245 / 255, 244 / 255, 240 / 255)
#: Text positions the tiny projector embeds (the decoder's condition length; see projector.py).
TINY_PROJECTOR_POSITIONS = 48
TINY_IMAGE_STD = (0.25, 0.25, 0.25)


def tiny_encoder_config(tokenizer, *, image_size: int | None = None, patch_size: int | None = None) -> dict[str, Any]:
    """A two-layer Qwen2.5-VL for tiny images; token ids come from the tiny tokenizer."""
    image_size = image_size or TINY_ENCODER_IMAGE_SIZE
    patch_size = patch_size or TINY_VISION_PATCH
    ids = tokenizer.convert_tokens_to_ids
    return {
        "text_config": {
            "vocab_size": len(tokenizer),
            "hidden_size": TINY_LLM_WIDTH,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 512,
            "rms_norm_eps": 1e-6,
            # head_dim 32 -> 16 rotary frequencies split over (time, height, width)
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            "tie_word_embeddings": False,
            "bos_token_id": None,
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": tokenizer.pad_token_id,
        },
        "vision_config": {
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 4,
            "in_channels": 3,
            "out_hidden_size": TINY_LLM_WIDTH,
            "patch_size": patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": image_size,  # one window covers the image: every block is global
            "fullatt_block_indexes": [0, 1],
            "hidden_act": "silu",
        },
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
        "tie_word_embeddings": False,
    }


#: A small SD3-style AutoencoderKL trained here (stage "vae"): 48 px RGB <-> 12 x 12 x 8 latents.
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 32],
    "layers_per_block": 1,
    "act_fn": "silu",
    "latent_channels": TINY_LATENT_CHANNELS,
    "norm_num_groups": 8,
    "sample_size": TINY_IMAGE_SIZE,
    "scaling_factor": 1.0,  # set from the latents' statistics when the vae stage ends
    "shift_factor": 0.0,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": False,
}

TINY_DECODER_CONFIG: dict[str, Any] = {
    "sample_size": TINY_LATENT_SIZE,
    "patch_size": TINY_DECODER_PATCH,
    "in_channels": TINY_LATENT_CHANNELS,
    "num_layers": 4,
    "attention_head_dim": 32,
    "num_attention_heads": 4,
    "joint_attention_dim": 128,
    "caption_projection_dim": 128,
    "pooled_projection_dim": 64,
    "out_channels": TINY_LATENT_CHANNELS,
    "pos_embed_max_size": TINY_LATENT_SIZE // TINY_DECODER_PATCH,
    "qk_norm": "rms_norm",
}

TINY_SETTINGS = UAESettings(
    image_size=TINY_IMAGE_SIZE,
    encoder_image_size=TINY_ENCODER_IMAGE_SIZE,
    latent_space="vae",
    caption_prompt="Describe the image.",
    max_caption_tokens=64,
    condition_length=48,  # the longest long caption's "generate" turn is 47 tokens
    caption_temperature=0.7,
    num_inference_steps=20,
    guidance_scale=1.0,
    negative_caption="",
    prediction="sample",
    preset="tiny",
)


def build_tiny_model(
    *,
    seed: int = 0,
    settings: UAESettings | None = None,
    decoder_config: dict | None = None,
    encoder_overrides: dict | None = None,
    encoder_image_size: int = TINY_ENCODER_IMAGE_SIZE,
    vision_patch: int = TINY_VISION_PATCH,
    projector_positions: int = TINY_PROJECTOR_POSITIONS,
    projector_norm: bool = True,
    decoder_init: str = "dit",
    vae_config: dict | None = None,
) -> UAEModel:
    """The tiny preset with freshly initialised weights (deterministic given ``seed``).

    ``encoder_overrides`` = ``{"text": {...}, "vision": {...}}`` changes the Qwen2.5-VL configs
    (experiments); ``projector_positions`` is the projector's text-position table (0: none).
    """
    import dataclasses

    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from uae_reference.tokenizer import build_tiny_processor, build_word_tokenizer, shapes_vocabulary

    tokenizer = build_word_tokenizer(shapes_vocabulary())
    processor = build_tiny_processor(
        tokenizer,
        image_size=encoder_image_size,
        patch_size=vision_patch,
        image_mean=TINY_IMAGE_MEAN,
        image_std=TINY_IMAGE_STD,
    )
    decoder_config = {**TINY_DECODER_CONFIG, **(decoder_config or {})}
    settings = dataclasses.replace(settings or TINY_SETTINGS, encoder_image_size=encoder_image_size)
    encoder_config = tiny_encoder_config(tokenizer, image_size=encoder_image_size, patch_size=vision_patch)
    for part in ("text", "vision"):
        encoder_config[f"{part}_config"].update((encoder_overrides or {}).get(part, {}))
    torch.manual_seed(seed)
    encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**encoder_config))
    projector = UAEProjector(
        in_dim=encoder_config["text_config"]["hidden_size"],
        out_dim=decoder_config["joint_attention_dim"],
        pooled_dim=decoder_config["pooled_projection_dim"],
        max_positions=projector_positions,
        output_norm=projector_norm,
    )
    decoder = SD3Transformer2DModel(**decoder_config)
    if decoder_init == "dit":
        init_decoder_from_scratch(decoder)
    vae = AutoencoderKL(**{**TINY_VAE_CONFIG, **(vae_config or {})}) if settings.latent_space == "vae" else None
    return UAEModel(
        encoder=encoder,
        processor=processor,
        projector=projector,
        decoder=decoder,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
        settings=settings,
        vae=vae,
    )


def init_decoder_from_scratch(decoder) -> None:
    """DiT's initialisation for an MMDiT trained from scratch (Peebles & Xie 2023, "adaLN-Zero").

    Linear layers get Xavier-uniform weights and zero biases; every adaptive-norm modulation
    (shift, scale, gate) and the output projection start at zero, so each block starts as the
    identity and the first gradients go to *what* to add rather than fighting random gates.
    diffusers initialises SD3Transformer2DModel with PyTorch defaults (its weights are meant to
    be loaded); from scratch those defaults left the tiny decoder ignoring its condition for
    hundreds of steps (measured: loss stuck at the background-only value).
    """
    from torch import nn

    for module in decoder.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for block in decoder.transformer_blocks:
        for norm in (block.norm1, block.norm1_context):
            nn.init.zeros_(norm.linear.weight)
            nn.init.zeros_(norm.linear.bias)
    nn.init.zeros_(decoder.norm_out.linear.weight)
    nn.init.zeros_(decoder.norm_out.linear.bias)
    nn.init.zeros_(decoder.proj_out.weight)
    nn.init.zeros_(decoder.proj_out.bias)


def build_paper_model(
    *,
    pretrained: bool = True,
    meta: bool = False,
    dtype: torch.dtype = torch.bfloat16,
    encoder_id: str = PAPER_ENCODER_ID,
    decoder_id: str = PAPER_DECODER_ID,
) -> UAEModel:
    """The paper preset.

    ``pretrained=True`` loads Qwen2.5-VL-3B-Instruct and the SD3.5-large transformer, VAE and
    scheduler (hub ids or local folders; ``HF_HUB_OFFLINE=1`` uses the local cache only). The
    projector is always new (stage 1 trains it). ``meta=True`` builds the same architectures
    from the configs above on the meta device: no weights, no download, for counting.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    if meta:
        with torch.device("meta"):
            encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**PAPER_ENCODER_CONFIG))
            decoder = SD3Transformer2DModel(**PAPER_DECODER_CONFIG)
            vae = AutoencoderKL(**PAPER_VAE_CONFIG)
            projector = _paper_projector()
        return UAEModel(
            encoder=encoder,
            processor=None,
            projector=projector,
            decoder=decoder,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=vae,
            settings=PAPER_SETTINGS,
        )
    if not pretrained:
        raise ValueError("the paper preset is either pretrained (real weights) or meta (architecture only)")
    from transformers import AutoProcessor

    from unified_bench.core.errors import WeightsNotFoundError

    try:
        encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(encoder_id, dtype=dtype)
        processor = AutoProcessor.from_pretrained(encoder_id)
        decoder = SD3Transformer2DModel.from_pretrained(decoder_id, subfolder="transformer", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(decoder_id, subfolder="vae", torch_dtype=dtype)
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(decoder_id, subfolder="scheduler")
    except OSError as err:
        raise WeightsNotFoundError(
            f"cannot load the paper preset's weights ({err}). Download {encoder_id} and {decoder_id} "
            "(SD3.5-large is gated: accept its licence and set HF_TOKEN), or pass local folders."
        ) from err
    return UAEModel(
        encoder=encoder,
        processor=processor,
        projector=_paper_projector().to(dtype),
        decoder=decoder,
        scheduler=scheduler,
        vae=vae,
        settings=PAPER_SETTINGS,
    )


def _paper_projector() -> UAEProjector:
    return UAEProjector(
        in_dim=PAPER_ENCODER_CONFIG["text_config"]["hidden_size"],
        out_dim=PAPER_DECODER_CONFIG["joint_attention_dim"],
        pooled_dim=PAPER_DECODER_CONFIG["pooled_projection_dim"],
    )


@dataclass(frozen=True)
class ModelPreset:
    """A named way to build the model."""

    name: str
    description: str
    build: Callable[..., UAEModel]


MODEL_PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset("tiny", "small configs of the same classes, trained from scratch on Shapes (CPU)", build_tiny_model),
    "paper": ModelPreset("paper", "Qwen2.5-VL-3B-Instruct + SD3.5-large, bf16, multi-GPU", build_paper_model),
}
