"""Tiny random-initialised Hugging Face models, built from configs and saved to disk.

Every builder writes a directory that loads through the same ``from_pretrained`` path the
real checkpoint uses, so adapter tests exercise the real loading code with no network.
Sizes are kept minimal (hidden 32, one or two layers, 32-56 px images) so a whole round
trip runs in seconds on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# A small corpus: the tokenizers are word-level over these words, plus digits and symbols
# (Emu3 writes "4*4" into its prompts, Qwen's chat template needs newlines and colons).
_CORPUS = (
    "a photo of the red cat sitting on blue chair near green window with white light "
    "describe image text picture dog tree house sky sun water car road person man woman "
    "you are an expert vision language model your task is given input generate textual "
    "description if there in transcribe it inside double quotes now carefully analyze "
    "output full random low quality ugly blur bad and anime cartoon system user assistant "
    "helpful generate lowres masterpiece film grained best"
).split()
_SYMBOLS = list("0123456789*:.,!?\"'()-_/#") + ["\n", "**"]


def tiny_tokenizer(
    special: list[str],
    *,
    named: dict[str, str] | None = None,
    extra_words: list[str] = (),
    chat_template: str | None = None,
    bos: str | None = None,
    eos: str | None = None,
    pad: str | None = None,
    unk: str = "<unk>",
    model_max_length: int = 4096,
    wrap_bos_eos: bool = False,
    add_bos: bool = False,
    add_eos: bool = False,
):
    """A word-level fast tokenizer: whitespace/punctuation split, digits one by one.

    ``special`` tokens come first in the vocabulary (ids 0..), then ``named`` special
    tokens (exposed as tokenizer attributes, e.g. ``image_token``), then words.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    named = dict(named or {})
    vocab: dict[str, int] = {}
    for token in [unk, *special, *named.values(), *_SYMBOLS, *extra_words, *_CORPUS]:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(r"[0-9]|[^\w\s]+"), behavior="isolated"),
        ]
    )
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    all_special = [t for t in [unk, *special, *named.values()] if t]
    # Registered on the backend so that "<|image_pad|>" in a prompt stays one token.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in all_special])
    if wrap_bos_eos:  # CLIP-style "<bos> text <eos>"
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
        )
    elif add_bos:  # Llama-style "<bos> text"
        backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    elif add_eos:  # SigLIP/T5-style "text <eos>"
        backend.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, vocab[eos])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        additional_special_tokens=[t for t in all_special if t not in {unk, bos, eos, pad}],
        extra_special_tokens=named or None,
        model_max_length=model_max_length,
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


# ---------------------------------------------------------------------------------------
# Qwen2.5-VL (captioner of `pair`, the LLM of `uae`)
# ---------------------------------------------------------------------------------------

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def qwen_vl_config(config_class, tokenizer, ids: dict[str, int], *, vision: dict, mrope_interleaved: bool | None = None, **text):
    """A Qwen-VL-family config: a 1-layer language model (hidden 32) with its M-RoPE over
    ``tokenizer``, a 1-block vision tower (``vision`` adds the family's own keys), and the
    image/video token ids of ``QWEN_SPECIAL``."""
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    if mrope_interleaved is not None:
        rope["mrope_interleaved"] = mrope_interleaved
    return config_class(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=1024,
            rope_parameters=rope,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            **text,
        ),
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            spatial_merge_size=2,
            temporal_patch_size=2,
            **vision,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def save_qwen_vl(model_class, config, processor, ids: dict[str, int], path: Path, *, seed: int) -> None:
    """Build ``model_class(config)`` under ``seed``, stop at ``<|im_end|>``, save it and the processor."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)
    processor.save_pretrained(path)


def build_tiny_qwen25vl(path: Path, *, seed: int = 0, image_px: int = 56) -> Path:
    """A 1-layer Qwen2.5-VL with its processor (images resized to ``image_px`` square)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    path = Path(path)
    tokenizer = tiny_tokenizer(QWEN_SPECIAL, eos="<|im_end|>", pad="<|endoftext|>", chat_template=QWEN_CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    pixels = image_px * image_px
    image_processor = Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels, patch_size=14, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    config = qwen_vl_config(
        Qwen2_5_VLConfig,
        tokenizer,
        ids,
        vision=dict(patch_size=14, window_size=56, fullatt_block_indexes=[0]),
    )
    save_qwen_vl(Qwen2_5_VLForConditionalGeneration, config, processor, ids, path, seed=seed)
    return path


# ---------------------------------------------------------------------------------------
# Stable Diffusion 3 (generator of `pair`, the decoder of `uae`)
# ---------------------------------------------------------------------------------------

CLIP_SPECIAL = ["<|startoftext|>", "<|endoftext|>"]


def tiny_clip_tokenizer():
    return tiny_tokenizer(
        CLIP_SPECIAL,
        bos="<|startoftext|>",
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        model_max_length=77,
        wrap_bos_eos=True,
    )


def tiny_clip_text_encoder(vocab_size: int, eos_token_id: int, *, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        hidden_act="gelu",
    )
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(config).eval()


def tiny_sd3_transformer(*, seed: int, joint_attention_dim: int = 64):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=joint_attention_dim,
        caption_projection_dim=16,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=32,
    ).eval()


def tiny_vae(*, seed: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        shift_factor=0.0609,
        scaling_factor=1.5035,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def tiny_t5(*, seed: int, d_model: int = 64):
    """A 1-layer T5 encoder and a unigram T5 tokenizer over the tiny corpus."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    words = list(dict.fromkeys(_SYMBOLS + _CORPUS))
    tokenizer = T5Tokenizer(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0) for w in words], extra_ids=0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_ff=64, d_kv=16, num_layers=1, num_heads=2,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval(), tokenizer


def build_tiny_sd3_pipeline(path: Path, *, seed: int = 0) -> Path:
    """A complete Stable Diffusion 3 pipeline folder: two tiny CLIP encoders, a tiny T5, a
    1-layer transformer and a 2x VAE, so a 32 px image is 8x8 transformer tokens."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    path = Path(path)
    tokenizer = tiny_clip_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    t5, t5_tokenizer = tiny_t5(seed=seed + 4)
    pipe = StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(seed=seed),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(seed=seed + 1),
        text_encoder=tiny_clip_text_encoder(len(tokenizer), eos, seed=seed + 2),
        tokenizer=tokenizer,
        text_encoder_2=tiny_clip_text_encoder(len(tokenizer), eos, seed=seed + 3),
        tokenizer_2=tokenizer,
        text_encoder_3=t5,
        tokenizer_3=t5_tokenizer,
    )
    pipe.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------
# Janus-Pro (transformers' JanusForConditionalGeneration)
# ---------------------------------------------------------------------------------------

JANUS_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>: {% else %}<|Assistant|>: {% endif %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image_placeholder>\n{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


def build_tiny_janus(path: Path, *, seed: int = 0) -> Path:
    """Janus with a 2-layer Llama (hidden 32), a 1-layer SigLIP-style encoder on 32 px
    images (4x4 patches -> 16 image tokens) and a VQ decoder that renders 32 px images."""
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusImageProcessor, JanusProcessor

    path = Path(path)
    named = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
    tokenizer = tiny_tokenizer(
        ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<|User|>", "<|Assistant|>"],
        named=named,
        bos="<｜begin▁of▁sentence｜>",
        eos="<｜end▁of▁sentence｜>",
        pad="<｜▁pad▁｜>",
        chat_template=JANUS_CHAT_TEMPLATE,
        add_bos=True,
    )
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in named.items()}
    num_image_tokens = 16
    image_processor = JanusImageProcessor(
        size={"height": 32, "width": 32}, min_size=4, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = JanusProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=JANUS_CHAT_TEMPLATE,
        num_image_tokens=num_image_tokens,
    )
    config = JanusConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, num_image_tokens=num_image_tokens, hidden_size=32, projection_dim=32,
            num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
        ),
        vq_config=dict(
            embed_dim=8, num_embeddings=32, latent_channels=8, base_channels=32, channel_multiplier=[1, 1, 1, 1],
            num_res_blocks=1, projection_dim=32, image_token_embed_dim=32,
        ),
        image_token_id=ids["image_token"],
    )
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    # The hub checkpoints' generation_config.json carries the image-start token for CFG.
    (path / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
                "generation_kwargs": {"boi_token_id": ids["boi_token"]},
            }
        )
    )
    return path


# ---------------------------------------------------------------------------------------
# Emu3 (transformers' Emu3ForConditionalGeneration)
# ---------------------------------------------------------------------------------------

EMU3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}<image>{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
EMU3_CODEBOOK = 32


def build_tiny_emu3(path: Path, *, seed: int = 0) -> Path:
    """Emu3 with a 1-layer text model (hidden 32), a 32-entry VQ codebook and an 8x VQ
    (a 32 px image is 4x4 tokens); both the chat and the generation direction."""
    from transformers import Emu3Config, Emu3ForConditionalGeneration, Emu3ImageProcessor, Emu3Processor

    path = Path(path)
    named = {
        "image_token": "<image>",
        "boi_token": "<|image start|>",
        "eoi_token": "<|image end|>",
        "image_wrapper_token": "<|image token|>",
        "eof_token": "<|extra_201|>",
    }
    visual = [f"<|visual token {i:06d}|>" for i in range(EMU3_CODEBOOK)]
    tokenizer = tiny_tokenizer(
        ["<|endoftext|>", "<|extra_203|>", "<|extra_204|>", "<|extra_200|>", *visual],
        named=named,
        bos="<|extra_203|>",
        eos="<|extra_204|>",
        pad="<|endoftext|>",
        chat_template=EMU3_CHAT_TEMPLATE,
    )
    pixels = 32 * 32
    image_processor = Emu3ImageProcessor(
        min_pixels=pixels, max_pixels=pixels, spatial_factor=8, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = Emu3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=EMU3_CHAT_TEMPLATE)
    config = Emu3Config(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vq_config=dict(
            codebook_size=EMU3_CODEBOOK,
            embed_dim=4,
            latent_channels=4,
            temporal_downsample_factor=1,
            base_channels=32,
            channel_multiplier=[1, 1, 1, 1],
            num_res_blocks=1,
            attn_resolutions=[],
            hidden_size=32,
        ),
        vocabulary_map=tokenizer.get_vocab(),
    )
    torch.manual_seed(seed)
    model = Emu3ForConditionalGeneration(config).eval()
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------
# A fake UAE release with the official layout
# ---------------------------------------------------------------------------------------

UAE_LORA_RANK = 32
UAE_JOINT_DIM = 64  # the projector's output = the DiT's joint_attention_dim (4096 for real)


def _legacy_lora_state(llm, *, rank: int, seed: int) -> dict[str, torch.Tensor]:
    """The encoder state as the official code saved it under transformers 4.50: the text
    decoder wrapped by PEFT (``model.base_model.model.``), LoRA on every linear layer of it
    (``all-linear``), ``visual.*`` and ``lm_head`` unwrapped."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, param in llm.state_dict().items():
        if name.startswith("model.language_model."):
            inner = name[len("model.language_model.") :]
            module, _, leaf = inner.rpartition(".")
            is_linear = module.split(".")[-1] in {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
            if is_linear:
                base = f"model.base_model.model.{module}"
                state[f"{base}.base_layer.{leaf}"] = param.clone()
                if leaf == "weight":
                    out_features, in_features = param.shape
                    state[f"{base}.lora_A.default.weight"] = torch.randn(rank, in_features, generator=generator) * 0.05
                    state[f"{base}.lora_B.default.weight"] = torch.randn(out_features, rank, generator=generator) * 0.05
            else:
                state[f"model.base_model.model.{inner}"] = param.clone()
        elif name.startswith("model.visual."):
            state["visual." + name[len("model.visual.") :]] = param.clone()
        else:
            state[name] = param.clone()
    return state


def build_fake_uae_release(root: Path, *, seed: int = 0, projector_in: str = "llm_lora") -> tuple[Path, Path]:
    """``root/Checkpoints/{llm, llm_lora, llm_model_preprocessor, dit, dit_lora}`` plus a tiny
    SD3 pipeline folder; returns (release root, sd3 folder).

    ``projector_in`` chooses where the projector weights are stored ("llm_lora" or "llm").
    """
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    root = Path(root)
    ckpt = root / "Checkpoints"
    llm_dir = build_tiny_qwen25vl(ckpt / "llm", seed=seed)
    AutoProcessor.from_pretrained(llm_dir).save_pretrained(ckpt / "llm_model_preprocessor")
    llm = Qwen2_5_VLForConditionalGeneration.from_pretrained(llm_dir)
    hidden = llm.config.text_config.hidden_size

    torch.manual_seed(seed + 10)
    projector = torch.nn.Sequential(
        torch.nn.Linear(hidden, 2 * UAE_JOINT_DIM), torch.nn.GELU(), torch.nn.Linear(2 * UAE_JOINT_DIM, UAE_JOINT_DIM)
    )
    projector_state = {f"projector.{k}": v.clone() for k, v in projector.state_dict().items()}

    state = _legacy_lora_state(llm, rank=UAE_LORA_RANK, seed=seed + 11)
    if projector_in == "llm_lora":
        state.update(projector_state)
    else:  # saved inside the llm folder, next to the base weights
        save_file(projector_state, str(llm_dir / "projector.safetensors"), metadata={"format": "pt"})
    keys = sorted(state)
    (ckpt / "llm_lora").mkdir(parents=True)
    for index in range(3):  # the official loader reads model-0000{1,2,3}-of-00003.safetensors
        part = {k: state[k].contiguous() for k in keys[index::3]}
        save_file(part, str(ckpt / "llm_lora" / f"model-0000{index + 1}-of-00003.safetensors"), metadata={"format": "pt"})

    dit = tiny_sd3_transformer(seed=seed + 20, joint_attention_dim=UAE_JOINT_DIM)
    dit.save_pretrained(ckpt / "dit")
    lora = get_peft_model(
        tiny_sd3_transformer(seed=seed + 20, joint_attention_dim=UAE_JOINT_DIM),
        LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights="gaussian"),
    )
    with torch.no_grad():  # gaussian init leaves B at zero; give the adapter an effect
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(seed + 21))
    lora.save_pretrained(ckpt / "dit_lora")

    sd3_dir = build_tiny_sd3_pipeline(root / "sd3", seed=seed + 30)
    return root, sd3_dir


# ---------------------------------------------------------------------------------------
# Cosmos 3 (transformers' Reasoner + diffusers' Cosmos3OmniPipeline, one folder)
# ---------------------------------------------------------------------------------------


def build_tiny_cosmos3(path: Path, *, seed: int = 0, image_px: int = 64) -> Path:
    """One folder laid out like a Cosmos 3 hub repository: the Reasoner at the root
    (``config.json`` of model type ``cosmos3_omni``, a Qwen3-VL of one layer, and its
    processor) and the diffusers pipeline beside it (``model_index.json``, ``transformer/``
    with a 1-layer MoT, ``vae/`` with a 2-stage Wan 2.2-style VAE of spatial factor 8,
    ``scheduler/``, ``text_tokenizer/``), so a 32 px image is 4x4 latents, 2x2 tokens."""
    from diffusers import AutoencoderKLWan, Cosmos3OmniPipeline, UniPCMultistepScheduler
    from diffusers.models.transformers.transformer_cosmos3 import Cosmos3OmniTransformer
    from transformers import Cosmos3OmniConfig, Cosmos3OmniForConditionalGeneration, Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    path = Path(path)
    tokenizer = tiny_tokenizer(QWEN_SPECIAL, eos="<|im_end|>", pad="<|endoftext|>", chat_template=QWEN_CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    pixels = image_px * image_px
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels, patch_size=16, merge_size=2),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(size={"shortest_edge": pixels, "longest_edge": pixels}, patch_size=16, merge_size=2),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    config = qwen_vl_config(
        Cosmos3OmniConfig,
        tokenizer,
        ids,
        vision=dict(patch_size=16, num_position_embeddings=16, deepstack_visual_indexes=[0]),
        head_dim=16,
        mrope_interleaved=True,
    )
    save_qwen_vl(Cosmos3OmniForConditionalGeneration, config, processor, ids, path, seed=seed)

    latent_channels = 4
    torch.manual_seed(seed + 1)
    transformer = Cosmos3OmniTransformer(
        head_dim=16,
        hidden_size=32,
        intermediate_size=64,
        latent_channel=latent_channels,
        latent_patch_size=2,
        num_attention_heads=2,
        num_hidden_layers=1,
        num_key_value_heads=1,
        patch_latent_dim=latent_channels * 4,
        vocab_size=len(tokenizer),
        rope_theta=10000.0,
        rope_axes_dim=[2, 3, 3],
        unified_3d_mrope_temporal_modality_margin=15,
        dtype="float32",
    ).eval()
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=latent_channels,
        dim_mult=[1, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * latent_channels,
        latents_std=[1.0] * latent_channels,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=8,
        scale_factor_temporal=2,
    ).eval()
    pipe = Cosmos3OmniPipeline(
        transformer=transformer,
        text_tokenizer=tokenizer,
        vae=vae,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        enable_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------
# UniDiffuser (diffusers' UniDiffuserPipeline: one U-ViT for image and text)
# ---------------------------------------------------------------------------------------


def build_tiny_unidiffuser(path: Path, *, seed: int = 0, text_tokens: int = 8) -> Path:
    """A UniDiffuser pipeline folder: a 2-block U-ViT over 16x16 latents (the 2x VAE of
    ``tiny_vae``, so 32 px images), 1-layer CLIP text and vision encoders, a 1-layer GPT-2
    caption decoder and word-level tokenizers. Saved as ``.bin``: the caption decoder ties
    its input and output embeddings, which safetensors refuses to store twice."""
    from diffusers import DPMSolverMultistepScheduler, UniDiffuserModel, UniDiffuserPipeline, UniDiffuserTextDecoder
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(path)
    clip_tokenizer = tiny_tokenizer(
        CLIP_SPECIAL, bos="<|startoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", model_max_length=text_tokens, wrap_bos_eos=True
    )
    eos = clip_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=text_tokens, bos_token_id=0, eos_token_id=eos, pad_token_id=eos, hidden_act="gelu",
        )
    ).eval()
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
            projection_dim=16, hidden_act="gelu",
        )
    ).eval()
    caption_tokenizer = tiny_tokenizer(["<|endoftext|>"], eos="<|endoftext|>", pad="<|endoftext|>")
    torch.manual_seed(seed + 1)
    text_decoder = UniDiffuserTextDecoder(
        prefix_length=text_tokens, prefix_inner_dim=32, prefix_hidden_dim=8, vocab_size=len(caption_tokenizer),
        n_positions=128, n_embd=32, n_layer=1, n_head=2,
    ).eval()
    torch.manual_seed(seed + 2)
    unet = UniDiffuserModel(
        text_dim=8, clip_img_dim=16, num_text_tokens=text_tokens, num_attention_heads=2, attention_head_dim=8,
        in_channels=4, out_channels=4, num_layers=2, norm_num_groups=4, sample_size=16, patch_size=2,
        use_data_type_embedding=True,
    ).eval()
    pipe = UniDiffuserPipeline(
        vae=tiny_vae(seed=seed + 3),
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        clip_image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        clip_tokenizer=clip_tokenizer,
        text_decoder=text_decoder,
        text_tokenizer=caption_tokenizer,
        unet=unet,
        scheduler=DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", solver_order=3),
    )
    pipe.save_pretrained(path, safe_serialization=False)
    return path
