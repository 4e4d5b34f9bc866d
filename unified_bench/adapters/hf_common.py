"""Shared plumbing for the adapters that run Hugging Face (transformers / diffusers) models.

Small pure helpers, so each adapter file reads as "load, caption, generate":

- :func:`resolve_device` / :func:`resolve_dtype` turn ``--model-arg device=... dtype=...``
  strings into torch objects (``auto``: CUDA + bfloat16 when there is a GPU, else CPU + fp32);
- :func:`hf_loading` maps a failed ``from_pretrained`` (offline, missing, gated) to
  :class:`~unified_bench.core.errors.WeightsNotFoundError` with a message that says what to do;
- :func:`seeded` and :func:`make_generator` give each sample its own random stream, so a
  sample's output depends on its seed only, never on its batch neighbours;
- :func:`images_from_array` turns a pipeline's float output into RGB images and turns a
  non-finite sample into an image that :func:`~unified_bench.adapters.base.check_images`
  rejects (a NaN must become a per-sample error, never a silently black picture);
- :func:`chat_text` builds a one-turn chat prompt with the processor's own template;
- :func:`effective_generation_config` / :func:`distribution_extra` give the settings
  ``model.generate`` really runs with (the checkpoint's ``generation_config`` merged with
  the call's keyword arguments), for the executed protocol;
- :class:`HfRuntimeConfig` declares the runtime and caption-sampling ``--model-arg`` keys
  every Hugging Face adapter takes; each adapter's own config dataclass subclasses it;
- :class:`HfAdapter` holds what the transformers/diffusers adapters share: building the
  config, the runtime and caption-sampling settings, loading a processor + model, the
  per-sample seeded caption loop, the caption half of the executed protocol, the common
  ``describe()`` entries and ``close()``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from unified_bench.adapters.base import Adapter
from unified_bench.core.errors import ConfigError, GatedCheckpointError, WeightsNotFoundError
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


# --- device and dtype ------------------------------------------------------------------------


def resolve_device(device: str | None) -> Any:
    """'auto'/None -> cuda:0 when available else cpu; anything else is passed to torch."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"--model-arg device={device!r} is not a torch device (try cpu, cuda, cuda:1)") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--model-arg device={device} asked for CUDA but no GPU is visible; use device=cpu")
    return resolved


def resolve_dtype(dtype: str | None, device: Any) -> Any:
    """'auto'/None -> bfloat16 on CUDA, float32 elsewhere (CPU half precision is slow and lossy)."""
    import torch

    if dtype in (None, "", "auto"):
        return torch.bfloat16 if getattr(device, "type", str(device)) == "cuda" else torch.float32
    name = _DTYPES.get(str(dtype).lower().replace("torch.", ""))
    if name is None:
        raise ConfigError(f"--model-arg dtype={dtype!r} is not supported; use auto, float32, float16 or bfloat16")
    return getattr(torch, name)


def dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


# --- loading -----------------------------------------------------------------------------------


def looks_local(ref: str) -> bool:
    """A reference that can only be a directory (absolute, ./, ~, or more than one '/')."""
    return ref.startswith(("/", "./", "../", "~")) or ref.count("/") > 1 or os.path.isdir(os.path.expanduser(ref))


def check_local_path(ref: str, *, what: str, arg: str) -> None:
    """Fail early, and clearly, when a local directory that was asked for is not there."""
    if looks_local(ref) and not Path(ref).expanduser().exists():
        raise WeightsNotFoundError(
            f"{what}: local path {ref} does not exist; fix --model-arg {arg}=... (a hub id or a directory)"
        )


@contextlib.contextmanager
def hf_loading(what: str, ref: str, *, arg: str) -> Iterator[None]:
    """Map hub/offline/missing-file failures inside the block to WeightsNotFoundError.

    ``what`` names the component ("captioner"), ``ref`` the hub id or path, ``arg`` the
    ``--model-arg`` that sets it; the message says how to get the weights.
    """
    check_local_path(ref, what=what, arg=arg)
    try:
        yield
    except (OSError, ValueError) as err:
        text = str(err)
        if isinstance(err, ValueError) and not _is_loading_value_error(err):
            raise
        if "gated" in text.lower() or type(err).__name__ == "GatedRepoError":
            raise GatedCheckpointError(
                f"{what}: {ref} is gated on the Hugging Face hub; accept its licence on the model page "
                f"and log in (`hf auth login` or HF_TOKEN), then retry. ({_first_line(text)})"
            ) from err
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
        hint = (
            "HF_HUB_OFFLINE is set, so nothing is downloaded: fetch it first with "
            f"`hf download {ref}` on a machine with network"
            if offline
            else f"download it with `hf download {ref}` (needs network)"
        )
        raise WeightsNotFoundError(
            f"{what}: cannot load {ref} ({_first_line(text)}). Either {hint}, or point "
            f"--model-arg {arg}=/path/to/local/checkpoint at a local copy."
        ) from err


def _is_loading_value_error(err: ValueError) -> bool:
    text = str(err)
    return type(err).__name__ == "HFValidationError" or any(
        marker in text for marker in ("valid repo id", "valid local path", "Repo id must", "not a valid model identifier")
    )


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line if len(line) <= 300 else line[:297] + "..."


def from_pretrained_kwargs(
    *, dtype: Any, device_map: str | None, trust_remote_code: bool | None, revision: str | None = None
) -> dict[str, Any]:
    """Keyword arguments shared by transformers/diffusers ``from_pretrained`` calls.

    ``trust_remote_code`` is passed only when the user set it, so the libraries' own default
    (and warning) applies otherwise.
    """
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map:
        kwargs["device_map"] = device_map
    if trust_remote_code is not None:
        kwargs["trust_remote_code"] = trust_remote_code
    if revision:
        kwargs["revision"] = revision
    return kwargs


def diffusers_dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """``dtype=`` for diffusers >= 0.36 (``torch_dtype`` is deprecated there), else ``torch_dtype=``."""
    from importlib.metadata import version

    major, minor = (int(part) for part in version("diffusers").split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (0, 36) else {"torch_dtype": dtype}


def place(model: Any, device: Any, device_map: str | None) -> Any:
    """Move to ``device`` unless accelerate already placed it (``device_map``); eval mode."""
    if not device_map:
        model = model.to(device)
    return model.eval() if hasattr(model, "eval") else model


def input_device(model: Any, fallback: Any) -> Any:
    """Where inputs must go: the device of the first parameter (works with device_map too)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return fallback


# --- seeds ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded(seed: int, device: Any = None) -> Iterator[None]:
    """Run the block with torch's global RNGs seeded to ``seed``, restoring them afterwards.

    Libraries that sample from the global RNG (``model.generate(do_sample=True)``) then draw
    the same numbers for the same seed whatever ran before, which is what makes a sample's
    output a function of its own seed.
    """
    import torch

    devices = []
    if torch.cuda.is_available():
        index = getattr(device, "index", None)
        devices = [index if index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def make_generator(seed: int, device: Any = "cpu") -> Any:
    """A dedicated torch.Generator for one sample (diffusers accepts a list, one per prompt)."""
    import torch

    return torch.Generator(device=device).manual_seed(int(seed))


def batches(n: int, size: int) -> Iterator[range]:
    """range(0, n) cut into consecutive chunks of at most ``size``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


# --- outputs --------------------------------------------------------------------------------------


def images_from_array(array: Any, *, value_range: tuple[float, float] = (0.0, 1.0)) -> list[Image.Image]:
    """Float images ``[N, H, W, 3]`` (numpy or torch, in ``value_range``) -> RGB PIL images.

    A sample with NaN or inf pixels becomes a float (mode ``"F"``) image that still holds the
    NaNs, so :func:`~unified_bench.adapters.base.check_images` reports *that sample* as
    "contains NaN or inf" while its batch neighbours are kept. Casting NaN to uint8 would
    silently give black pixels instead.
    """
    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"expected images shaped [N, H, W, 3], got {array.shape}")
    low, high = value_range
    images = []
    for index, sample in enumerate(array):
        if not np.isfinite(sample).all():
            bad = int((~np.isfinite(sample)).sum())
            logger.warning("sample %d: %d non-finite pixel values (NaN/inf); reported as a per-sample error", index, bad)
            images.append(Image.fromarray(np.full(sample.shape[:2], np.nan, dtype=np.float32), mode="F"))
            continue
        scaled = (sample - low) / (high - low)
        pixels = (np.clip(scaled, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        images.append(Image.fromarray(pixels, mode="RGB"))
    return images


def unnormalize(array: Any, mean: Any, std: Any) -> Any:
    """Undo the processor's normalisation on channel-last images: ``x * std + mean``."""
    mean = np.asarray(mean if mean is not None else [0.5, 0.5, 0.5], dtype=np.float32)
    std = np.asarray(std if std is not None else [0.5, 0.5, 0.5], dtype=np.float32)
    return np.asarray(array, dtype=np.float32) * std + mean


def resize_to(images: list[Image.Image], size: tuple[int, int] | None) -> list[Image.Image]:
    """Bicubic resize of RGB images to ``size`` (width, height); non-RGB (NaN) ones pass."""
    if size is None:
        return images
    width, height = int(size[0]), int(size[1])
    return [
        img.resize((width, height), Image.BICUBIC) if img.mode == "RGB" and img.size != (width, height) else img
        for img in images
    ]


def as_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_new_tokens(tokenizer: Any, sequences: Any, prompt_length: int, *, strip: bool = True) -> list[str]:
    """Decode what ``generate`` added after a (left-padded) prompt of ``prompt_length`` tokens."""
    new_tokens = sequences[:, prompt_length:]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [text.strip() for text in texts] if strip else list(texts)


# --- sampling --------------------------------------------------------------------------------

#: generation_config fields that shape sampled captions; recorded as effective settings.
SAMPLING_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")


def effective_sampling(generation_config: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """What ``generate`` will use: the checkpoint's generation_config with our overrides on top."""
    base = {name: getattr(generation_config, name, None) for name in SAMPLING_FIELDS}
    base.update({name: value for name, value in overrides.items() if name in SAMPLING_FIELDS})
    if not base.get("do_sample"):  # greedy decoding ignores the sampling knobs
        base = {k: v for k, v in base.items() if k in ("do_sample", "repetition_penalty", "max_new_tokens")}
    return {key: value for key, value in base.items() if value is not None}


def cfg_scale(adapter: str, guidance_scale: float) -> float:
    """A classifier-free guidance weight, checked: below 1 is an error, 1 disables guidance."""
    if guidance_scale < 1.0:
        raise ConfigError(f"{adapter}: guidance_scale must be >= 1 (1 disables classifier-free guidance)")
    return float(guidance_scale)


def caption_generate_kwargs(*, max_new_tokens: int, do_sample: bool, temperature: float) -> dict[str, Any]:
    """Keyword arguments for ``model.generate`` (temperature only matters when sampling)."""
    kwargs: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "do_sample": bool(do_sample)}
    if do_sample:
        kwargs["temperature"] = float(temperature)
    return kwargs


# --- what generate really runs with ------------------------------------------------------------

#: GenerationConfig fields that change which tokens come out, besides ``do_sample``,
#: ``temperature`` and ``max_new_tokens`` (the executed protocol has fields of their own).
DISTRIBUTION_FIELDS = (
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "top_h",
    "repetition_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "sequence_bias",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "min_length",
    "min_new_tokens",
    "exponential_decay_length_penalty",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "length_penalty",
    "penalty_alpha",
    "guidance_scale",
    "renormalize_logits",
    "remove_invalid_values",
    "watermarking_config",
)
#: The logits warpers transformers applies only when ``do_sample`` is on.
SAMPLING_ONLY_FIELDS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")


def library_generation_defaults() -> dict[str, Any]:
    """transformers' own defaults: ``GenerationConfig()`` with the global defaults that
    ``generate`` fills in for what neither the checkpoint nor the call sets (transformers 5
    keeps them apart; in 4.x they are the attributes of ``GenerationConfig()``)."""
    from transformers import GenerationConfig

    defaults = GenerationConfig().to_dict()
    global_defaults = getattr(GenerationConfig, "_get_default_generation_params", None)
    for key, value in (global_defaults() if global_defaults else {}).items():
        if defaults.get(key) is None:
            defaults[key] = value
    return defaults


def effective_generation_config(generation_config: Any, overrides: Mapping[str, Any]) -> Any:
    """The GenerationConfig ``model.generate(**overrides)`` runs with.

    ``generate`` starts from the checkpoint's ``model.generation_config`` (top_k, top_p,
    repetition_penalty... from ``generation_config.json``), fills what it leaves unset with
    the library defaults, then applies the call's keyword arguments; so does this (a copy:
    the model's own config is never touched). Keys that are not generation settings (model
    inputs, ``generation_mode``) are ignored.
    """
    from transformers import GenerationConfig

    config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
    for key, value in library_generation_defaults().items():
        if getattr(config, key, None) is None and value is not None:
            setattr(config, key, value)
    for key, value in overrides.items():
        if hasattr(config, key):
            setattr(config, key, value)
    return config


def distribution_extra(config: Any, *, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Every field of :data:`DISTRIBUTION_FIELDS` whose value in ``config`` differs from the
    library default and that ``generate`` applies (the sampling-only warpers are dropped
    when ``do_sample`` is off), JSON-ready; ``skip`` names fields reported elsewhere."""
    defaults = library_generation_defaults()
    sampling = bool(getattr(config, "do_sample", False))
    out: dict[str, Any] = {}
    for name in DISTRIBUTION_FIELDS:
        if name in skip or (not sampling and name in SAMPLING_ONLY_FIELDS) or not hasattr(config, name):
            continue
        value = getattr(config, name)
        if value != defaults.get(name):
            out[name] = _jsonable(value)
    return out


def executed_caption(prompt: str, config: Any) -> ExecutedCaption:
    """The executed caption settings for an instruction and an effective GenerationConfig.

    Without sampling transformers decodes greedily (or by beam search) and never applies the
    temperature: that is reported as temperature 0.0 (the greedy limit) and named in
    ``extra["decoding"]``.
    """
    sampling = bool(config.do_sample)
    extra = distribution_extra(config)
    if not sampling:
        extra["decoding"] = "beam search" if int(config.num_beams or 1) > 1 else "greedy"
    return ExecutedCaption(
        prompt=prompt,
        do_sample=sampling,
        temperature=float(config.temperature) if sampling else 0.0,
        max_new_tokens=None if config.max_new_tokens is None else int(config.max_new_tokens),
        extra=extra,
    )


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    return str(value)


def autoregressive_settings(
    model: Any,
    overrides: Mapping[str, Any],
    *,
    rendered: tuple[int, int],
    output: tuple[int, int],
    steps: int,
    image_tokens: int,
    extra: Mapping[str, Any] | None = None,
) -> ExecutedGeneration:
    """The executed generation settings of image tokens sampled by ``model.generate(**overrides)``
    (its generation_config merged in) and decoded at ``rendered`` (width, height).

    ``steps`` is the number of tokens sampled one by one (each a forward pass); the guidance
    is CFG on their logits. When the returned ``output`` size differs, the bicubic resize to
    it is named in ``extra`` (``output_width``/``output_height``).
    """
    config = effective_generation_config(model.generation_config, overrides)
    info: dict[str, Any] = {
        "image_temperature": float(config.temperature),
        "image_tokens": int(image_tokens),
        **distribution_extra(config, skip=("guidance_scale",)),
        **(extra or {}),
    }
    if tuple(output) != tuple(rendered):
        info.update(output_width=int(output[0]), output_height=int(output[1]), resize="bicubic")
    return ExecutedGeneration(
        width=int(rendered[0]),
        height=int(rendered[1]),
        num_inference_steps=int(steps),
        guidance_scale=float(config.guidance_scale),
        scheduler="autoregressive (image tokens)",
        dtype=dtype_name(getattr(model, "dtype", None)),
        extra=info,
    )


def pipeline_settings(
    pipe: Any, call: Mapping[str, Any], *, dtype: Any, extra: Mapping[str, Any] | None = None
) -> ExecutedGeneration:
    """The executed generation settings of a diffusers pipeline called with ``call``."""
    return ExecutedGeneration(
        width=int(call["width"]),
        height=int(call["height"]),
        num_inference_steps=int(call["num_inference_steps"]),
        guidance_scale=float(call["guidance_scale"]),
        scheduler=type(pipe.scheduler).__name__,
        dtype=dtype_name(getattr(pipe, "dtype", None) or dtype),
        extra=dict(extra or {}),
    )


# --- prompts --------------------------------------------------------------------------------------


def chat_messages(prompt: str, *, with_image: bool, image_first: bool = True, role: str = "user") -> list[dict]:
    """One chat turn with an optional image slot before (or after) the text."""
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    if with_image:
        image = {"type": "image"}
        content = [image, *content] if image_first else [*content, image]
    return [{"role": role, "content": content}]


def chat_text(processor: Any, messages: Sequence[dict], *, add_generation_prompt: bool = True) -> str:
    """The prompt string the processor's chat template renders for ``messages``."""
    template_owner = processor if getattr(processor, "chat_template", None) else getattr(processor, "tokenizer", processor)
    if not getattr(template_owner, "chat_template", None):
        raise ConfigError(
            f"{type(processor).__name__} has no chat template; use a chat/instruct checkpoint or pass one that ships "
            "chat_template.json"
        )
    return template_owner.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def model_revision(model: Any) -> str | None:
    """The hub commit a model was loaded from, when the library recorded it."""
    config = getattr(model, "config", None)
    for attr in ("_commit_hash", "_name_or_path_revision"):
        value = getattr(config, attr, None)
        if value:
            return str(value)
    return None


# --- the shared adapter base ---------------------------------------------------------------------


@dataclasses.dataclass
class HfRuntimeConfig:
    """The ``--model-arg`` keys every Hugging Face adapter takes: where and how the weights
    run, and how captions are sampled (the paper's 0.7 / 512 by default).

    Each adapter declares its own config as a subclass that adds its checkpoints and
    generation settings; the registry lists the fields (these first) as its arguments.
    ``trust_remote_code`` stays off unless the user turns it on: it is passed to
    ``from_pretrained`` only then.
    """

    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    trust_remote_code: bool = False
    max_new_tokens: int = 512
    temperature: float = 0.7
    do_sample: bool = True


@dataclasses.dataclass
class DiffusersConfig(HfRuntimeConfig):
    """The generation keys of the adapters that render through a diffusers pipeline (the
    paper's 40 steps, CFG 5.0, 1024x1024 by default)."""

    steps: int = 40
    guidance_scale: float = 5.0
    height: int = 1024
    width: int = 1024
    negative_prompt: str | None = None
    generator_device: str = "cpu"


class HfAdapter(Adapter):
    """What the Hugging Face adapters share; each keeps its own arguments, prompts and generation.

    An adapter sets ``config_class`` (a subclass of :class:`HfRuntimeConfig`) and implements
    :meth:`_setup`. Construction builds ``self.config`` (the registry passes a config; a
    Python caller may pass keyword arguments instead), sets ``device``, ``dtype``,
    ``device_map``, ``trust_remote_code`` and the caption sampling settings, then calls
    ``_setup(config)``, which sets ``self.processor`` before captioning; :meth:`_caption_model` names the
    model that captions (``self.model`` by default).
    """

    config_class: ClassVar[type[HfRuntimeConfig]] = HfRuntimeConfig

    def _setup_pipeline(self, config: DiffusersConfig) -> None:
        """The diffusers generation settings of ``config`` as attributes (checked)."""
        if config.steps < 1:
            raise ConfigError(f"{self.name}: steps must be positive")
        self.steps = int(config.steps)
        self.guidance_scale = float(config.guidance_scale)
        self.height = int(config.height)
        self.width = int(config.width)
        self.negative_prompt = config.negative_prompt
        self.generator_device = config.generator_device

    def _pipeline_describe(self) -> dict[str, Any]:
        """The diffusers generation settings, for ``describe()``."""
        return {
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
            "negative_prompt": self.negative_prompt,
        }

    def __init__(self, config: HfRuntimeConfig | None = None, /, **overrides: Any) -> None:
        if config is None:
            config = self.config_class(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.device_map = config.device_map or None
        self.trust_remote_code = bool(config.trust_remote_code)
        self.max_new_tokens = int(config.max_new_tokens)
        self.temperature = float(config.temperature)
        self.do_sample = bool(config.do_sample)
        self._setup(config)

    def _setup(self, config: Any) -> None:
        """The adapter's own part of construction: its settings from ``config`` (its
        ``config_class``), then loading. Runs after the runtime settings are set."""

    def _caption_generate_kwargs(self) -> dict[str, Any]:
        return caption_generate_kwargs(
            max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, temperature=self.temperature
        )

    def _load_processor_and_model(
        self, model_class: Any, ref: str, *, revision: str | None, what: str, arg: str
    ) -> tuple[Any, Any]:
        """``AutoProcessor`` + ``model_class`` from ``ref``, the model placed and in eval mode."""
        from transformers import AutoProcessor

        kwargs = from_pretrained_kwargs(
            dtype=self.dtype,
            device_map=self.device_map,
            trust_remote_code=True if self.trust_remote_code else None,
            revision=revision,
        )
        with hf_loading(what, ref, arg=arg):
            processor = AutoProcessor.from_pretrained(
                ref, **{k: v for k, v in kwargs.items() if k in ("trust_remote_code", "revision")}
            )
            model = model_class.from_pretrained(ref, **kwargs)
        return processor, place(model, self.device, self.device_map)

    def _load_pipeline_from(self, pipeline_class: Any, ref: str, *, revision: str | None, what: str, arg: str, **kwargs: Any) -> Any:
        """``pipeline_class.from_pretrained(ref)`` in the adapter's dtype (``kwargs`` added),
        placed on the device (or spread by ``device_map``: diffusers places whole components,
        so ``auto`` becomes ``balanced``), progress bar off."""
        kwargs = {**diffusers_dtype_kwargs(self.dtype), **kwargs}
        if self.trust_remote_code:
            kwargs["trust_remote_code"] = True
        if revision:
            kwargs["revision"] = revision
        if self.device_map:
            kwargs["device_map"] = "balanced" if self.device_map == "auto" else self.device_map
        with hf_loading(what, ref, arg=arg):
            pipe = pipeline_class.from_pretrained(ref, **kwargs)
        if not self.device_map:
            pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _caption_chat(self, images: Sequence[Image.Image], prompt: str, seeds: Sequence[int], *, image_first: bool) -> list[str]:
        """Caption with ``self.model``: the image and ``prompt`` in one chat turn of the
        processor's template, one image at a time (:meth:`_caption_each`)."""
        text = chat_text(self.processor, chat_messages(prompt, with_image=True, image_first=image_first))
        return self._caption_each(
            self.model,
            images,
            seeds,
            lambda image: self.processor(text=[text], images=[image], return_tensors="pt"),
        )

    def _caption_each(
        self,
        model: Any,
        images: Sequence[Image.Image],
        seeds: Sequence[int],
        encode: Callable[[Image.Image], Any],
        *,
        strip: bool = True,
        **generate_kwargs: Any,
    ) -> list[str]:
        """Caption one image at a time, each under ``seeded(seed)``.

        Sampled decoding draws from the global RNG and a padded batch depends on its
        neighbours, so one at a time is what makes a caption a function of its own seed.
        ``encode`` turns one RGB image into the processor's inputs.
        """
        import torch

        device = input_device(model, self.device)
        kwargs = {**self._caption_generate_kwargs(), **generate_kwargs}
        captions = []
        for image, seed in zip(images, seeds, strict=True):
            inputs = encode(as_rgb(image))
            inputs = inputs.to(device, dtype=self.dtype) if hasattr(inputs, "to") else inputs
            with torch.inference_mode(), seeded(seed, device):
                sequences = model.generate(**inputs, **kwargs)
            captions.extend(decode_new_tokens(self.processor, sequences, inputs["input_ids"].shape[1], strip=strip))
        return captions

    def _caption_model(self) -> Any:
        """The transformers model whose ``generate`` writes the captions."""
        return self.model

    def caption_settings(self, prompt: str) -> ExecutedCaption:
        """What ``caption(prompt=prompt)`` runs: the instruction as given (every HF adapter puts
        it into its chat turn unchanged) and the effective sampling settings, i.e. the
        caption model's ``generation_config`` merged with the call's keyword arguments."""
        model = self._caption_model()
        config = effective_generation_config(getattr(model, "generation_config", None), self._caption_generate_kwargs())
        return executed_caption(prompt, config)

    def _runtime_record(self) -> dict[str, Any]:
        """The ``device``/``device_map``/``dtype`` entries of ``describe()``."""
        return {"device": str(self.device), "device_map": self.device_map, "dtype": dtype_name(self.dtype)}

    def _caption_sampling(self, model: Any) -> dict[str, Any]:
        """The effective caption sampling settings of ``model`` (for ``describe()``)."""
        return effective_sampling(model.generation_config, self._caption_generate_kwargs())

    def _release(self, *attributes: str) -> None:
        """Drop the named models/processors/pipelines and give their memory back."""
        import gc

        for attribute in attributes:
            setattr(self, attribute, None)
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
