"""``uae``: the official UAE release (arXiv 2509.09666) run from its checkpoint files.

What the official ``demo.py`` (UAE repository) does, and what this module does instead:

**Layout.** A release directory (``Checkpoints/`` in the repository) holds

=========================  ============================================================
``llm/``                   Qwen2.5-VL-3B weights, loaded with ``from_pretrained``
``llm_lora/``              safetensors shards (``model-0000i-of-00003.safetensors``) of
                           the LoRA'd encoder (r=32, alpha=64, ``all-linear``), loaded
                           with ``load_state_dict(strict=False)``
``llm_model_preprocessor/`` the Qwen2.5-VL processor config (``max_pixels`` 65536)
``dit/``                   an ``SD3Transformer2DModel`` (the decoder, pretrained by UAE)
``dit_lora/``              a PEFT adapter for that transformer (``PeftModel``)
=========================  ============================================================

plus the Stable Diffusion 3.5 Large pipeline (``sd3``: VAE, scheduler, CLIP encoders).

**Encoder.** The official class ``Qwen2_5_VLWithLongContext`` is custom code: a
``Qwen2_5_VLForConditionalGeneration`` with a ``projector`` =
``Sequential(Linear(H, 2D), GELU, Linear(2D, D))`` (D = 4096, the SD3.5 joint-attention
width) applied to the LLM's last hidden states. Here the stock transformers class is loaded
and the LoRA and projector are applied explicitly by key name (:func:`split_llm_state`):
LoRA pairs are merged into the base weights (``W += alpha/r * B @ A``, in float32, then
cast), which equals the unmerged PEFT forward up to rounding; the projector is the
documented :class:`UaeProjector`. Keys written by transformers 4.50 (the release's pin:
``model.layers.*``, ``visual.*``) and by transformers 5 (``model.language_model.*``) are
both understood, with or without PEFT's ``base_model.model.`` wrapper.

**Caption** (``gen_prompt``): user turn = instruction text, then the image; the image is
first resized as ``qwen_vl_utils.fetch_image`` does (:func:`qwen_smart_resize`), then by
the processor; sampled at temperature 0.7, up to 512 new tokens, the other sampling
settings from the checkpoint's ``generation_config``.

**Generate** (``gen_image``): the prompt and the official negative prompt are rendered with
the chat template in a ``"generate"`` role turn, right-padded together into one batch of
two, and run through the LLM; the projected last hidden states (padding included, as
officially) are SD3's ``prompt_embeds`` / ``negative_prompt_embeds``. Both use the pooled
embedding of the empty prompt through SD3's two CLIP encoders (computed once; T5 is never
loaded since the pooled vector does not use it). 1024x1024, 40 steps, CFG 5.0.

Position ids: transformers 4.50 numbered text-only tokens by the attention mask on a fresh
model but by ``arange`` once a caption had been generated (its cached ``rope_deltas``);
the round trip (caption, then generate) therefore used ``arange``, which is what is passed
here explicitly. Real tokens get the same positions either way; only padded slots differ.

**Not verifiable from public sources** (no weights could be downloaded when this was
written): whether the hub release ``zhiyuanyan1/UAE`` uses exactly the folder names above
(``model`` may point at any directory that has them, directly or under ``Checkpoints/``,
and each folder can be given explicitly); whether the projector weights live in ``llm/``,
in ``llm_lora/`` or both (both are searched, ``llm_lora`` wins); and which exact key
prefixes the ``llm_lora`` shards carry (unknown keys are counted in ``describe()``, and a
folder with no LoRA key at all is an error rather than a silent no-op).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import nn

from unified_bench.adapters.base import Capabilities
from unified_bench.adapters.hf_common import (
    DiffusersConfig,
    HfAdapter,
    diffusers_dtype_kwargs,
    from_pretrained_kwargs,
    hf_loading,
    images_from_array,
    input_device,
    looks_local,
    make_generator,
    pipeline_settings,
    place,
)
from unified_bench.core.errors import ConfigError, WeightsNotFoundError
from unified_bench.core.protocol import ExecutedGeneration

logger = logging.getLogger(__name__)

UAE_HUB = "zhiyuanyan1/UAE"
SD35_LARGE = "stabilityai/stable-diffusion-3.5-large"
#: Verbatim from the official demo.py (get_prompt_embeds).
NEGATIVE_PROMPT = "Generate a random, low quality, ugly, blur, bad and anime, cartoon image."
#: The LoRA the official code wraps the encoder with: r=32, alpha=64, all-linear.
LLM_LORA_RANK = 32
LLM_LORA_ALPHA = 64.0
#: qwen_vl_utils constants used by fetch_image before the processor sees the image.
QWEN_VL_MIN_PIXELS = 4 * 28 * 28
QWEN_VL_MAX_PIXELS = 16384 * 28 * 28
#: What the official llm_model_preprocessor/preprocessor_config.json sets (used when only
#: the LLM folder's processor is available).
OFFICIAL_PROCESSOR_PIXELS = {"min_pixels": 3136, "max_pixels": 65536}


# --- release layout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleasePaths:
    """Where each part of a UAE release lives (local directories)."""

    llm: Path
    llm_lora: Path
    llm_processor: Path | None
    dit: Path
    dit_lora: Path

    def to_dict(self) -> dict[str, str | None]:
        return {k: (str(v) if v is not None else None) for k, v in vars(self).items()}


def find_release(
    root: Path | None,
    *,
    llm: str | None = None,
    llm_lora: str | None = None,
    llm_processor: str | None = None,
    dit: str | None = None,
    dit_lora: str | None = None,
) -> ReleasePaths:
    """Locate the release folders under ``root`` (or ``root/Checkpoints``); explicit paths win."""
    base = None
    if root is not None:
        base = root / "Checkpoints" if (root / "Checkpoints" / "llm").is_dir() else root

    def pick(explicit: str | None, name: str, *, required: bool = True) -> Path | None:
        path = Path(explicit).expanduser() if explicit else (base / name if base is not None else None)
        if path is None or not path.is_dir():
            if not required:
                return None
            where = f"under {base}" if base is not None else "(no release directory given)"
            raise WeightsNotFoundError(
                f"uae: the {name!r} folder of the UAE release was not found {where}; point "
                f"--model-arg model=... at the release directory (it holds llm/, llm_lora/, dit/, dit_lora/) "
                f"or give --model-arg {name}=/path explicitly"
            )
        return path

    return ReleasePaths(
        llm=pick(llm, "llm"),
        llm_lora=pick(llm_lora, "llm_lora"),
        llm_processor=pick(llm_processor, "llm_model_preprocessor", required=False),
        dit=pick(dit, "dit"),
        dit_lora=pick(dit_lora, "dit_lora"),
    )


# --- encoder checkpoint keys (pure) -----------------------------------------------------------

_LORA = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
# transformers 4.50 layout of Qwen2_5_VLForConditionalGeneration -> transformers 5 layout.
_LEGACY = (
    (re.compile(r"^model\.(?=(layers|embed_tokens|norm)\.)"), "model.language_model."),
    (re.compile(r"^visual\."), "model.visual."),
)


def canonical_llm_name(name: str) -> str:
    """A parameter/module name in the transformers-5 layout, whatever layout it came from."""
    for prefix in ("module.", "llm_model."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    name = name.replace("base_model.model.", "").replace(".base_layer.", ".")
    for pattern, target in _LEGACY:
        name = pattern.sub(target, name, count=1)
    return name


@dataclass
class LlmCheckpoint:
    """An ``llm_lora`` state dict sorted by what each tensor is for."""

    weights: dict[str, Any] = field(default_factory=dict)  # canonical param name -> tensor
    lora_a: dict[str, Any] = field(default_factory=dict)  # canonical module name -> A [r, in]
    lora_b: dict[str, Any] = field(default_factory=dict)  # canonical module name -> B [out, r]
    projector: dict[str, Any] = field(default_factory=dict)  # "0.weight" ... -> tensor

    @property
    def lora_modules(self) -> list[str]:
        return sorted(set(self.lora_a) & set(self.lora_b))


def split_llm_state(state: dict[str, Any]) -> LlmCheckpoint:
    """Sort checkpoint tensors into plain weights, LoRA pairs and projector weights."""
    out = LlmCheckpoint()
    for key, tensor in state.items():
        stripped = key
        for prefix in ("module.", "llm_model."):
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix) :]
        if stripped.startswith("projector."):
            out.projector[stripped[len("projector.") :]] = tensor
            continue
        match = _LORA.match(stripped)
        if match:
            module = canonical_llm_name(match["module"])
            (out.lora_a if match["ab"] == "A" else out.lora_b)[module] = tensor
            continue
        out.weights[canonical_llm_name(stripped)] = tensor
    return out


def merge_lora(weight: Any, lora_a: Any, lora_b: Any, scale: float) -> Any:
    """``W + scale * B @ A`` computed in float32 and returned in ``weight``'s dtype."""
    merged = weight.float() + scale * (lora_b.float().to(weight.device) @ lora_a.float().to(weight.device))
    return merged.to(weight.dtype)


# --- the projector --------------------------------------------------------------------------------


class UaeProjector(nn.Module):
    """LLM last hidden state (H) -> SD3 joint-attention space (D): Linear(H, 2D), GELU,
    Linear(2D, D). Parameter names match the official ``projector`` ("0.weight", "2.bias")."""

    def __init__(self, hidden_size: int, inner_size: int, out_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(hidden_size, inner_size), nn.GELU(), nn.Linear(inner_size, out_size))

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> UaeProjector:
        """Build with the shapes the checkpoint has and load it (strictly)."""
        try:
            inner, hidden = state["0.weight"].shape
            out, inner2 = state["2.weight"].shape
        except KeyError as err:
            raise WeightsNotFoundError(
                f"uae: projector weights are incomplete (have {sorted(state)}; need 0.weight/0.bias/2.weight/2.bias)"
            ) from err
        if inner2 != inner:
            raise WeightsNotFoundError(f"uae: projector layer shapes disagree ({inner} vs {inner2})")
        projector = cls(int(hidden), int(inner), int(out))
        projector.layers.load_state_dict({k: v for k, v in state.items()}, strict=True)
        return projector

    def forward(self, hidden_states: Any) -> Any:
        return self.layers(hidden_states)


# --- prompt embeddings (pure-ish helpers) ----------------------------------------------------------


def arange_position_ids(input_ids: Any) -> Any:
    """Qwen2.5-VL text positions ``[3, B, L]``: 0..L-1 on every row (see the module docstring)."""
    batch, length = input_ids.shape
    return torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, batch, length)


def pad_right(sequences: list[Any], pad_id: int) -> tuple[Any, Any]:
    """Right-pad 1-D id tensors into a batch; the mask marks non-pad ids (as officially)."""
    input_ids = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=pad_id)
    return input_ids, input_ids.ne(pad_id)


def qwen_smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = QWEN_VL_MIN_PIXELS, max_pixels: int = QWEN_VL_MAX_PIXELS
) -> tuple[int, int]:
    """The size ``qwen_vl_utils`` resizes an image to: multiples of ``factor``, area within bounds."""
    if max(height, width) / max(1, min(height, width)) > 200:
        raise ValueError(f"aspect ratio of {width}x{height} is above 200")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_pre_resize(image: Image.Image, factor: int = 28) -> Image.Image:
    """``qwen_vl_utils.fetch_image``'s resize (bicubic), applied before the processor."""
    height, width = qwen_smart_resize(image.height, image.width, factor)
    return image if (width, height) == image.size else image.resize((width, height), Image.BICUBIC)


# --- the adapter ------------------------------------------------------------------------------------


@dataclass
class UaeConfig(DiffusersConfig):
    model: str = UAE_HUB
    sd3: str = SD35_LARGE
    llm: str | None = None
    llm_lora: str | None = None
    llm_processor: str | None = None
    dit: str | None = None
    dit_lora: str | None = None
    pooled_embeds: str | None = None
    revision: str | None = None
    negative_prompt: str | None = NEGATIVE_PROMPT
    lora_alpha: float = LLM_LORA_ALPHA
    qwen_pre_resize: bool = True


class UaeAdapter(HfAdapter):
    """UAE: Qwen2.5-VL + LoRA + projector encoder, SD3.5 transformer + LoRA decoder."""

    name: ClassVar[str] = "uae"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch_size=8,
        native_resolution=(1024, 1024),
        deterministic=True,
        needs=("transformers", "diffusers", "peft", "accelerate"),
    )

    config_class: ClassVar[type[UaeConfig]] = UaeConfig

    def _setup(self, config: UaeConfig) -> None:
        self.model_ref = config.model
        self.sd3_ref = config.sd3
        self.revision = config.revision
        self._setup_pipeline(config)
        self.lora_alpha = float(config.lora_alpha)
        self.use_qwen_pre_resize = bool(config.qwen_pre_resize)
        folders = {name: getattr(config, name) for name in ("llm", "llm_lora", "llm_processor", "dit", "dit_lora")}
        needed = any(folders[name] is None for name in ("llm", "llm_lora", "dit", "dit_lora"))
        self.paths = find_release(self._release_root(config.model, needed), **folders)
        self.load_report: dict[str, Any] = {}
        self.processor = self._load_processor()
        self.llm, self.projector = self._load_encoder()
        self.pooled_source = config.pooled_embeds or f"{config.sd3} (CLIP-L + CLIP-G, empty prompt)"
        self.pooled = self._pooled_embeds(config.pooled_embeds)
        self.pipe = self._load_decoder()
        self.negative_ids = self._generation_ids(self.negative_prompt)
        self.capabilities = replace(type(self).capabilities, native_resolution=(self.width, self.height))

    # --- loading -----------------------------------------------------------------------------

    def _release_root(self, ref: str, needed: bool) -> Path | None:
        """A local release directory, downloading the hub repository when ``ref`` is an id."""
        if not needed:
            return None
        path = Path(ref).expanduser()
        if path.is_dir():
            return path
        if looks_local(ref):
            raise WeightsNotFoundError(f"uae: release directory {ref} does not exist; fix --model-arg model=...")
        from huggingface_hub import snapshot_download

        with hf_loading("uae release", ref, arg="model"):
            return Path(snapshot_download(repo_id=ref, revision=self.revision))

    def _load_processor(self) -> Any:
        from transformers import AutoProcessor

        extra = {"trust_remote_code": True} if self.trust_remote_code else {}
        source = self.paths.llm_processor
        if source is not None:
            try:
                with hf_loading("uae processor", str(source), arg="llm_processor"):
                    return AutoProcessor.from_pretrained(source, **extra)
            except (WeightsNotFoundError, TypeError, KeyError, AttributeError) as err:
                # The repository's folder may hold only preprocessor_config.json; take the
                # tokenizer from the LLM folder and keep the official pixel bounds.
                logger.info("uae: %s; using the processor of %s with the official pixel bounds", err, self.paths.llm)
        with hf_loading("uae processor", str(self.paths.llm), arg="llm"):
            processor = AutoProcessor.from_pretrained(self.paths.llm, **extra)
        bounds = dict(OFFICIAL_PROCESSOR_PIXELS)
        if source is not None and (source / "preprocessor_config.json").is_file():
            config = json.loads((source / "preprocessor_config.json").read_text())
            bounds = {k: config[k] for k in bounds if k in config} or bounds
        for key, value in bounds.items():
            setattr(processor.image_processor, key, value)
        if hasattr(processor.image_processor, "size"):
            processor.image_processor.size = {"shortest_edge": bounds["min_pixels"], "longest_edge": bounds["max_pixels"]}
        return processor

    def _load_encoder(self) -> tuple[Any, UaeProjector]:
        from transformers import Qwen2_5_VLForConditionalGeneration

        kwargs = from_pretrained_kwargs(dtype=self.dtype, device_map=self.device_map, trust_remote_code=None)
        with hf_loading("uae llm", str(self.paths.llm), arg="llm"):
            llm = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.paths.llm, **kwargs)
        llm = place(llm, self.device, self.device_map)
        checkpoint = split_llm_state(_read_safetensors_dir(self.paths.llm_lora, what="llm_lora"))
        self._apply_llm_checkpoint(llm, checkpoint)
        projector_state = checkpoint.projector or _read_safetensors_dir(
            self.paths.llm, what="llm", prefix="projector.", strip_prefix=True
        )
        if not projector_state:
            raise WeightsNotFoundError(
                f"uae: no projector weights (projector.0.weight ...) in {self.paths.llm_lora} or {self.paths.llm}"
            )
        projector = UaeProjector.from_state_dict(projector_state)
        projector = projector.to(device=input_device(llm, self.device), dtype=self.dtype).eval()
        self.load_report["projector"] = {
            "hidden": projector.layers[0].in_features,
            "inner": projector.layers[0].out_features,
            "out": projector.layers[2].out_features,
            "source": "llm_lora" if checkpoint.projector else "llm",
        }
        return llm.eval(), projector

    def _apply_llm_checkpoint(self, llm: Any, checkpoint: LlmCheckpoint) -> None:
        """Copy plain weights, then merge LoRA pairs, by canonical parameter name."""
        if not checkpoint.lora_modules:
            raise WeightsNotFoundError(
                f"uae: {self.paths.llm_lora} holds no LoRA weights (*.lora_A.* / *.lora_B.*); is it the "
                "llm_lora folder of the UAE release?"
            )
        params = dict(llm.named_parameters())
        params.update({canonical_llm_name(k): v for k, v in list(params.items())})
        unknown: list[str] = []
        loaded = 0
        with torch.no_grad():
            for name, tensor in checkpoint.weights.items():
                target = params.get(name)
                if target is None or tuple(target.shape) != tuple(tensor.shape):
                    unknown.append(name)
                    continue
                target.copy_(tensor.to(device=target.device, dtype=target.dtype))
                loaded += 1
            scale, rank = None, None
            for module in checkpoint.lora_modules:
                target = params.get(f"{module}.weight")
                lora_a, lora_b = checkpoint.lora_a[module], checkpoint.lora_b[module]
                if target is None or tuple(target.shape) != (lora_b.shape[0], lora_a.shape[1]):
                    unknown.append(f"{module} (lora)")
                    continue
                rank = int(lora_a.shape[0])
                scale = self.lora_alpha / rank
                target.copy_(merge_lora(target, lora_a, lora_b, scale))
        merged = len(checkpoint.lora_modules) - sum(1 for u in unknown if u.endswith("(lora)"))
        if merged == 0:
            raise WeightsNotFoundError(
                f"uae: none of the {len(checkpoint.lora_modules)} LoRA modules in {self.paths.llm_lora} match the "
                f"Qwen2.5-VL at {self.paths.llm} (first: {checkpoint.lora_modules[0]!r})"
            )
        if unknown:
            logger.warning("uae: %d llm_lora entries matched no parameter (first: %s)", len(unknown), unknown[0])
        self.load_report["llm_lora"] = {
            "weights_loaded": loaded,
            "lora_modules_merged": merged,
            "lora_rank": rank,
            "lora_alpha": self.lora_alpha,
            "lora_scale": scale,
            "unmatched_keys": len(unknown),
        }

    def _pooled_embeds(self, path: str | None) -> Any:
        """SD3's pooled text embedding of the empty prompt: [CLIP-L text_embeds, CLIP-G text_embeds]."""
        if path:
            return _load_tensor_file(path, key="pooled_prompt_embeds").to(self.device, self.dtype)
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        pooled = []
        with hf_loading("uae sd3 text encoders", self.sd3_ref, arg="sd3"):
            for encoder_dir, tokenizer_dir in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
                tokenizer = AutoTokenizer.from_pretrained(self.sd3_ref, subfolder=tokenizer_dir)
                encoder = CLIPTextModelWithProjection.from_pretrained(self.sd3_ref, subfolder=encoder_dir, dtype=self.dtype)
                encoder = encoder.to(self.device).eval()
                ids = tokenizer([""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
                with torch.inference_mode():
                    pooled.append(encoder(ids.to(self.device), output_hidden_states=True)[0])
                del encoder
        return torch.cat(pooled, dim=-1)

    def _load_decoder(self) -> Any:
        from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
        from peft import PeftModel

        with hf_loading("uae dit", str(self.paths.dit), arg="dit"):
            transformer = SD3Transformer2DModel.from_pretrained(self.paths.dit, **diffusers_dtype_kwargs(self.dtype))
        joint = int(transformer.config.joint_attention_dim)
        if joint != self.projector.layers[2].out_features:
            raise WeightsNotFoundError(
                f"uae: the projector emits {self.projector.layers[2].out_features}-d embeddings but the DiT at "
                f"{self.paths.dit} expects joint_attention_dim={joint}"
            )
        dropped = dict.fromkeys(
            ("text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3")
        )
        with hf_loading("uae sd3", self.sd3_ref, arg="sd3"):
            pipe = StableDiffusion3Pipeline.from_pretrained(
                self.sd3_ref, transformer=transformer, **dropped, **diffusers_dtype_kwargs(self.dtype)
            )
        pipe = pipe.to(self.device)
        with hf_loading("uae dit_lora", str(self.paths.dit_lora), arg="dit_lora"):
            pipe.transformer = PeftModel.from_pretrained(pipe.transformer, str(self.paths.dit_lora)).eval()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # --- understanding -----------------------------------------------------------------------

    def _caption_model(self) -> Any:
        return self.llm

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        # Official order: the instruction, then the image.
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image"}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        image_processor = self.processor.image_processor
        factor = int(getattr(image_processor, "patch_size", 14)) * int(getattr(image_processor, "merge_size", 2))

        def encode(image: Image.Image) -> Any:
            if self.use_qwen_pre_resize:
                image = qwen_pre_resize(image, factor)
            return self.processor(text=[text], images=[image], padding=True, return_tensors="pt")

        # Not stripped: the official caption reaches the generator as decoded.
        return self._caption_each(self.llm, images, seeds, encode, strip=False)

    # --- generation --------------------------------------------------------------------------

    def _generation_ids(self, prompt: str) -> Any:
        messages = [{"role": "generate", "content": [{"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.processor.tokenizer.encode(text, return_tensors="pt")[0]

    def prompt_embeds(self, prompt: str) -> tuple[Any, Any]:
        """(negative, positive) SD3 prompt embeddings for one prompt, padded together."""
        device = input_device(self.llm, self.device)
        pad_id = self.processor.tokenizer.pad_token_id
        input_ids, attention_mask = pad_right([self.negative_ids, self._generation_ids(prompt)], pad_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        with torch.inference_mode():
            hidden = self.llm.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=arange_position_ids(input_ids),
                use_cache=False,
            ).last_hidden_state
            projected = self.projector(hidden.to(self.projector.layers[0].weight.device))
        negative, positive = projected.chunk(2, dim=0)
        return negative, positive

    def _call_settings(self, size: tuple[int, int] | None) -> dict[str, Any]:
        """The pipeline arguments every prompt gets at ``size`` (None: the configured size)."""
        width, height = size if size is not None else (self.width, self.height)
        return {"height": int(height), "width": int(width), "num_inference_steps": self.steps, "guidance_scale": self.guidance_scale}

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        call = self._call_settings(size)
        images: list[Image.Image] = []
        pipe_device = self.pipe._execution_device
        pooled = self.pooled.to(pipe_device)
        for prompt, seed in zip(prompts, seeds, strict=True):
            negative, positive = self.prompt_embeds(prompt)
            with torch.inference_mode():
                output = self.pipe(
                    prompt_embeds=positive.to(pipe_device),
                    negative_prompt_embeds=negative.to(pipe_device),
                    pooled_prompt_embeds=pooled,
                    negative_pooled_prompt_embeds=pooled,
                    **call,
                    generator=make_generator(seed, self.generator_device),
                    output_type="np",
                )
            images.extend(images_from_array(output.images))
        return images

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        """SD3.5 with the DiT LoRA, conditioned on the projected encoder states."""
        return pipeline_settings(
            self.pipe, self._call_settings(size), dtype=self.dtype, extra={"negative_prompt": self.negative_prompt}
        )

    # --- record ------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_ref,
            "revision": self.revision,
            "sd3": self.sd3_ref,
            "paths": self.paths.to_dict(),
            **self._runtime_record(),
            "load": self.load_report,
            "caption_sampling": self._caption_sampling(self.llm),
            "caption_image_pre_resize": "qwen_vl_utils.fetch_image" if self.use_qwen_pre_resize else None,
            "generation": {
                **self._pipeline_describe(),
                "pooled_prompt_embeds": self.pooled_source,
                "position_ids": "arange (as in the official round trip)",
                "generator_device": str(self.generator_device),
                "dit_lora": "peft PeftModel (unmerged)",
                "llm_lora": "merged into the base weights (float32 merge)",
            },
            "batching": "one sample at a time (captions under torch.manual_seed(seed); a generator per image)",
        }

    def close(self) -> None:
        self._release("llm", "projector", "pipe", "processor")


# --- files ----------------------------------------------------------------------------------------


def _read_safetensors_dir(
    directory: Path, *, what: str, prefix: str | None = None, strip_prefix: bool = False
) -> dict[str, Any]:
    """All tensors of the ``*.safetensors`` files in ``directory`` (sorted; later files win),
    optionally only the keys starting with ``prefix``."""
    from safetensors import safe_open

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files and prefix is None:
        raise WeightsNotFoundError(f"uae: no *.safetensors files in {directory} ({what})")
    state: dict[str, Any] = {}
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                if prefix is not None and not key.startswith(prefix):
                    continue
                name = key[len(prefix) :] if (prefix and strip_prefix) else key
                state[name] = handle.get_tensor(key)
    return state


def _load_tensor_file(path: str, *, key: str) -> Any:
    """One tensor from a .safetensors (by ``key``) or a torch file (tensor or dict)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsNotFoundError(f"uae: pooled_embeds file {path} does not exist")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        data = load_file(str(file))
    else:
        data = torch.load(str(file), map_location="cpu", weights_only=True)
    if isinstance(data, dict):
        if key not in data:
            raise ConfigError(f"uae: {path} has no {key!r} tensor (has {sorted(data)})")
        data = data[key]
    return data if data.ndim == 2 else data.reshape(1, -1)
