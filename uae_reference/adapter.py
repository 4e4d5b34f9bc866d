"""The reference UAE model as a Unified-Bench adapter: ``uae-reference`` and ``uae-tiny``.

- ``uae-reference --model-arg checkpoint=DIR`` runs any checkpoint folder written by
  ``uae-reference train`` (``UAEModel.save_pretrained``);
- ``uae-tiny`` is the same adapter with the shipped tiny checkpoint
  (``uae_reference/checkpoints/uae-tiny``, rebuilt by the command in ``RETRAIN_COMMAND``).

The tiny encoder only knows the words of the Shapes grammar, so by default it is asked with
the instruction it was trained on (``prompt=checkpoint``); ``prompt=runner`` passes the
runner's instruction through instead (for checkpoints whose tokenizer can read it). Images
are resized to the checkpoint's resolution before captioning (area averaging when
shrinking) and generated images are resized to the requested size. Captions and images
depend only on each sample's seed: captions are drawn with one generator per sample and the
decoder's input is padded to a fixed length.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.core.errors import ConfigError, WeightsNotFoundError
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration
from uae_reference.model import resize_image

BUNDLED_TINY = Path(__file__).parent / "checkpoints" / "uae-tiny"
RETRAIN_COMMAND = "uae-reference train --preset tiny --stage all --export uae_reference/checkpoints/uae-tiny"
PROMPT_CHOICES = ("checkpoint", "runner")


@dataclass
class UAEReferenceConfig:
    checkpoint: str = field(default="", metadata={"help": "checkpoint folder written by `uae-reference train` ('bundled': the shipped uae-tiny)"})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda or cuda:N"})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16", "choices": ("float32", "bfloat16", "float16")})
    temperature: float = field(default=-1.0, metadata={"help": "caption sampling temperature (0: greedy; -1: the checkpoint's)"})
    num_steps: int = field(default=0, metadata={"help": "denoising steps (0: the checkpoint's)"})
    guidance_scale: float = field(default=-1.0, metadata={"help": "classifier-free guidance scale (-1: the checkpoint's)"})
    prompt: str = field(default="checkpoint", metadata={"help": "instruction: the checkpoint's own, or the runner's", "choices": PROMPT_CHOICES})
    batch_size: int = field(default=64, metadata={"help": "images per forward pass"})


def _checkpoint_path(value: str) -> Path:
    if value == "":
        raise ConfigError("uae-reference needs --model-arg checkpoint=DIR (a folder written by `uae-reference train`)")
    if value == "bundled":
        path = BUNDLED_TINY
    else:
        path = Path(value).expanduser()
    if not (path / "uae_config.json").is_file():
        hint = f"rebuild it with `{RETRAIN_COMMAND}`" if path == BUNDLED_TINY else "pass a folder written by `uae-reference train`"
        raise WeightsNotFoundError(f"no UAE checkpoint at {path} (uae_config.json missing); {hint}")
    return path


def checkpoint_digest(path: Path) -> str:
    """sha256 over the checkpoint's weight files (names and bytes), for the run record."""
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*.safetensors")):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


class UAEReferenceAdapter(Adapter):
    """The reference UAE model (Qwen2.5-VL encoder, MLP projector, SD3 MMDiT decoder)."""

    name = "uae-reference"
    config_class = UAEReferenceConfig
    capabilities = Capabilities(max_batch_size=64, native_resolution=(48, 48), deterministic=True)  # the tiny preset; instances report their checkpoint's

    def __init__(self, config: UAEReferenceConfig | None = None) -> None:
        import torch

        from uae_reference.model import UAEModel

        self.config = config or UAEReferenceConfig()
        if self.config.prompt not in PROMPT_CHOICES:
            raise ConfigError(f"{self.name}: prompt must be one of {', '.join(PROMPT_CHOICES)}")
        self.path = _checkpoint_path(self.config.checkpoint)
        dtype = getattr(torch, self.config.dtype)
        self.model = UAEModel.from_pretrained(self.path, device=self.config.device, dtype=dtype)
        size = self.model.settings.image_size
        # instance attribute: the resolution is the checkpoint's, not the class's
        self.capabilities = Capabilities(max_batch_size=self.config.batch_size, native_resolution=(size, size), deterministic=True)

    # --- the contract ------------------------------------------------------------------------

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        resized = [img.convert("RGB") for img in images]  # the model resizes to its encoder's size
        instruction = prompt if self.config.prompt == "runner" else None
        temperature = None if self.config.temperature < 0 else self.config.temperature
        out: list[str] = []
        for start in range(0, len(resized), self.config.batch_size):
            chunk = slice(start, start + self.config.batch_size)
            out += self.model.sample_captions(resized[chunk], seeds=seeds[chunk], prompt=instruction, temperature=temperature).texts
        return out

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        steps = self.config.num_steps or None
        guidance = None if self.config.guidance_scale < 0 else self.config.guidance_scale
        images: list[Image.Image] = []
        for start in range(0, len(prompts), self.config.batch_size):
            chunk = slice(start, start + self.config.batch_size)
            images += self.model.generate(prompts[chunk], seeds=seeds[chunk], num_steps=steps, guidance_scale=guidance)
        if size is not None:
            images = [resize_image(img, tuple(size)) for img in images]
        return images

    def caption_settings(self, prompt: str) -> ExecutedCaption:
        settings = self.model.settings
        temperature = settings.caption_temperature if self.config.temperature < 0 else self.config.temperature
        return ExecutedCaption(
            prompt=prompt if self.config.prompt == "runner" else settings.caption_prompt,
            do_sample=temperature > 0,  # temperature 0: greedy
            temperature=float(temperature),
            max_new_tokens=int(settings.max_caption_tokens),
            extra={"encoder_image_size": settings.encoder_image_size, **self.model.caption_sampling_overrides()},
        )

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        settings = self.model.settings
        # the decoder renders at the checkpoint's resolution; a requested size is a resize after
        return ExecutedGeneration(
            width=settings.image_size,
            height=settings.image_size,
            num_inference_steps=int(self.config.num_steps or settings.num_inference_steps),
            guidance_scale=float(settings.guidance_scale if self.config.guidance_scale < 0 else self.config.guidance_scale),
            scheduler=type(self.model.scheduler).__name__,
            dtype=self.config.dtype,
            extra={"output_size": list(size)} if size is not None and tuple(size) != (settings.image_size,) * 2 else {},
        )

    def describe(self) -> dict[str, Any]:
        settings = self.model.settings
        return {
            "checkpoint": str(self.path),
            "checkpoint_sha256": checkpoint_digest(self.path),
            "preset": settings.preset,
            "image_size": settings.image_size,
            "encoder_image_size": settings.encoder_image_size,
            "caption_prompt": settings.caption_prompt if self.config.prompt == "checkpoint" else "runner",
            "caption_temperature": settings.caption_temperature if self.config.temperature < 0 else self.config.temperature,
            "num_inference_steps": self.config.num_steps or settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale if self.config.guidance_scale < 0 else self.config.guidance_scale,
            "dtype": self.config.dtype,
        }

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


@dataclass
class UAETinyConfig(UAEReferenceConfig):
    checkpoint: str = field(default="bundled", metadata={"help": "'bundled' (the shipped tiny checkpoint) or a folder"})
    # Unified-GRPO stages of the bundled model (uae_reference.rl.checkpoints)
    stage: str = field(default="final", metadata={"help": "bundled stage: final (shipped), pre-rl, g4u or u4g", "choices": ("final", "pre-rl", "g4u", "u4g")})


class UAETinyAdapter(UAEReferenceAdapter):
    """The shipped tiny UAE, trained on Shapes on a CPU (see docs/reference-model.md)."""

    name = "uae-tiny"
    config_class = UAETinyConfig

    def __init__(self, config: UAETinyConfig | None = None) -> None:
        import dataclasses

        config = config or UAETinyConfig()
        if config.stage != "final":  # --model-arg stage=pre-rl|g4u|u4g (docs/unified-grpo.md)
            from uae_reference.rl.checkpoints import stage_checkpoint

            if config.checkpoint != "bundled":
                raise ConfigError("uae-tiny: pass either stage= (a bundled stage) or checkpoint=DIR, not both")
            config = dataclasses.replace(config, checkpoint=str(stage_checkpoint(config.stage)))
        super().__init__(config)

