"""``unidiffuser``: Tsinghua's UniDiffuser through diffusers' ``UniDiffuserPipeline``.

One U-ViT models the joint distribution of an image and a text; the pipeline samples either
conditional (arXiv 2303.06555). Both halves are modes of that one model:

- **caption** (``img2text`` mode): the image is encoded (VAE latent + CLIP image embedding),
  a text latent is denoised from noise conditioned on it, and the pipeline's GPT-2 text
  decoder turns that latent into words by beam search. The model takes no instruction: the
  benchmark's prompt never reaches it, and the report says so (an empty prompt);
- **generate** (``text2img`` mode): the caption is CLIP-encoded and the image latents are
  denoised with classifier-free guidance, then VAE-decoded.

Defaults follow the official sampling config (``configs/sample_unidiffuser_v1.py`` in
thu-ml/unidiffuser): DPM-Solver, 50 steps, guidance 7.0, data type 1 (v1), 512x512, input
images center-cropped to a square and Lanczos-resized to it (``utils.center_crop``). The
U-ViT's position embedding fixes the resolution: another ``size`` is a bicubic resize of the
512x512 image, and the report says so. Every sample runs alone with its own
``torch.Generator``, in both modes (batch invariance).

diffusers moved the pipeline to ``pipelines/deprecated`` after 0.33.1 (no more fixes); it
still runs in the installed version, which the tests check.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from PIL import Image

from unified_bench.adapters.base import Capabilities
from unified_bench.adapters.hf_common import (
    HfAdapter,
    HfRuntimeConfig,
    as_rgb,
    cfg_scale,
    dtype_name,
    images_from_array,
    make_generator,
    pipeline_settings,
    resize_to,
)
from unified_bench.core.errors import ConfigError
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration

logger = logging.getLogger(__name__)

UNIDIFFUSER_V1 = "thu-ml/unidiffuser-v1"
UNIDIFFUSER_V0 = "thu-ml/unidiffuser-v0"


def center_square(image: Image.Image, side: int) -> Image.Image:
    """The official input transform: the centred square crop, Lanczos-resized to ``side``."""
    crop = min(image.size)
    left, top = (image.width - crop) // 2, (image.height - crop) // 2
    return image.crop((left, top, left + crop, top + crop)).resize((side, side), Image.LANCZOS)


@dataclass
class UniDiffuserConfig(HfRuntimeConfig):
    model: str = UNIDIFFUSER_V1
    revision: str | None = None
    steps: int = 50
    guidance_scale: float = 7.0
    caption_steps: int = 50
    caption_guidance_scale: float = 7.0
    data_type: int = 1  # v1 was fine-tuned with a data-type token (1: real photos); v0 ignores it
    generator_device: str = "cpu"
    # A caption is a denoised text latent decoded by beam search, not sampled tokens: the
    # caption-sampling arguments of the other Hugging Face adapters do not apply here.
    max_new_tokens: int = field(default=0, init=False)
    temperature: float = field(default=0.0, init=False)
    do_sample: bool = field(default=False, init=False)


class UniDiffuserAdapter(HfAdapter):
    """UniDiffuser: one joint image-text diffusion model, img2text and text2img modes."""

    name: ClassVar[str] = "unidiffuser"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch_size=8,
        native_resolution=(512, 512),
        deterministic=True,
        needs=("transformers", "diffusers"),
    )

    config_class: ClassVar[type[UniDiffuserConfig]] = UniDiffuserConfig

    def _setup(self, config: UniDiffuserConfig) -> None:
        if config.steps < 1 or config.caption_steps < 1:
            raise ConfigError("unidiffuser: steps and caption_steps must be positive")
        self.model_ref = config.model
        self.revision = config.revision
        self.steps = int(config.steps)
        self.guidance_scale = cfg_scale("unidiffuser", config.guidance_scale)
        self.caption_steps = int(config.caption_steps)
        self.caption_guidance_scale = cfg_scale("unidiffuser", config.caption_guidance_scale)
        self.data_type = int(config.data_type)
        self.generator_device = config.generator_device
        self.pipe = self._load_pipeline()
        side = int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)
        self.native_size = (side, side)
        self.capabilities = replace(type(self).capabilities, native_resolution=self.native_size)

    def _load_pipeline(self) -> Any:
        from diffusers import UniDiffuserPipeline

        return self._load_pipeline_from(UniDiffuserPipeline, self.model_ref, revision=self.revision, what="unidiffuser", arg="model")

    # --- understanding ---------------------------------------------------------------------

    def _caption_call(self) -> dict[str, Any]:
        return {
            "num_inference_steps": self.caption_steps,
            "guidance_scale": self.caption_guidance_scale,
            "data_type": self.data_type,
        }

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        import torch

        side = self.native_size[0]
        captions: list[str] = []
        self.pipe.set_image_to_text_mode()
        for image, seed in zip(images, seeds, strict=True):
            with torch.inference_mode():
                output = self.pipe(
                    image=center_square(as_rgb(image), side),
                    generator=make_generator(seed, self.generator_device),
                    **self._caption_call(),
                )
            captions.extend(text.strip() for text in output.text)
        return captions

    def _beam_settings(self) -> dict[str, Any]:
        """The text decoder's beam search as the installed code runs it (``generate_captions``
        passes none of these, so they are ``generate_beam``'s defaults)."""
        parameters = inspect.signature(type(self.pipe.text_decoder).generate_beam).parameters
        return {name: parameters[name].default for name in ("beam_size", "entry_length", "temperature")}

    def caption_settings(self, prompt: str) -> ExecutedCaption:
        """No instruction reaches the model (``prompt`` is empty); the words come from a beam
        search (not sampled: temperature 0.0, as for greedy decoding) over a text latent the
        U-ViT denoised with the steps and guidance in ``extra``."""
        beam = self._beam_settings()
        call = self._caption_call()
        return ExecutedCaption(
            prompt="",
            do_sample=False,
            temperature=0.0,
            max_new_tokens=int(beam["entry_length"]),
            extra={
                "decoding": "beam search",
                "num_beams": int(beam["beam_size"]),
                "beam_temperature": float(beam["temperature"]),
                "instruction": "none (img2text mode takes no text input)",
                "text_latent_steps": call["num_inference_steps"],
                "text_latent_guidance_scale": call["guidance_scale"],
                "text_latent_scheduler": type(self.pipe.scheduler).__name__,
                "data_type": call["data_type"],
                "input_transform": f"center square crop, Lanczos resize to {self.native_size[0]}",
            },
        )

    # --- generation ------------------------------------------------------------------------

    def _generate_call(self) -> dict[str, Any]:
        width, height = self.native_size
        return {
            "height": height,
            "width": width,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "data_type": self.data_type,
            "output_type": "np",  # floats, so a NaN stays visible
        }

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        import torch

        images: list[Image.Image] = []
        self.pipe.set_text_to_image_mode()
        for prompt, seed in zip(prompts, seeds, strict=True):
            with torch.inference_mode():
                output = self.pipe(prompt=prompt, generator=make_generator(seed, self.generator_device), **self._generate_call())
            images.extend(images_from_array(output.images))
        return resize_to(images, size)

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        """width/height: the U-ViT's fixed resolution; a requested other size is a bicubic
        resize of it, named in ``extra``."""
        call = self._generate_call()
        # CLIP reads at most this many tokens of the caption; the rest is cut off.
        extra: dict[str, Any] = {"data_type": call["data_type"], "prompt_max_tokens": int(self.pipe.clip_tokenizer.model_max_length)}
        if size is not None and tuple(size) != self.native_size:
            extra.update(output_width=int(size[0]), output_height=int(size[1]), resize="bicubic")
        return pipeline_settings(self.pipe, call, dtype=self.dtype, extra=extra)

    # --- record ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_ref,
            "revision": self.revision,
            "pipeline": type(self.pipe).__name__,
            **self._runtime_record(),
            "unet_dtype": dtype_name(self.pipe.unet.dtype),
            "caption": {**self._caption_call(), "beam": self._beam_settings(), "instruction": None},
            "generation": {
                "steps": self.steps,
                "guidance_scale": self.guidance_scale,
                "native_resolution": list(self.native_size),
                "other_sizes": "rendered at the native resolution, then bicubic-resized",
                "generator_device": str(self.generator_device),
            },
            "batching": "one sample at a time, each with its own seed (batch invariant)",
        }

    def close(self) -> None:
        self._release("pipe")
