"""``pair``: any transformers image-text-to-text model + any diffusers text-to-image pipeline.

The understanding half is loaded with ``AutoModelForImageTextToText`` + ``AutoProcessor``
(Qwen2.5-VL, InternVL, Gemma 3, LLaVA-style models...) and prompted through the processor's
chat template; the generation half is any ``DiffusionPipeline`` that takes a text prompt
(SD3.5, FLUX, Qwen-Image, Sana...). Both are given as a hub id or a local directory.

Seeding and batching (correctness first):

- **Captions** are decoded one image at a time under ``torch.manual_seed(seeds[i])`` (in a
  forked RNG state). Sampled decoding draws from the global RNG, and in a padded batch the
  draws and the padding depend on the neighbours, so batching captions would make a caption
  depend on which images share its batch. One at a time costs GPU throughput for short
  prompts and buys exact batch invariance.
- **Images** get one ``torch.Generator`` per sample (diffusers takes a list), created on
  ``generator_device`` (CPU by default: the same seed gives the same initial noise on any
  GPU). ``gen_batch_size`` prompts go through the pipeline together; the default 1 is
  exactly batch invariant. Larger values are faster and give the same initial noise per
  sample, but batched kernels (and pipelines that pad prompts to the longest in the batch,
  such as Qwen-Image) may change the result in the last bits.

Sampling settings that are not arguments here (top_p, top_k, repetition penalty) come from
the checkpoint's ``generation_config``, as in the official UAE demo; ``describe()`` records
the effective values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from PIL import Image

from unified_bench.adapters.base import Capabilities
from unified_bench.adapters.hf_common import (
    DiffusersConfig,
    HfAdapter,
    batches,
    images_from_array,
    make_generator,
    model_revision,
    pipeline_settings,
)
from unified_bench.core.errors import ConfigError
from unified_bench.core.protocol import ExecutedGeneration

logger = logging.getLogger(__name__)

@dataclass
class PairConfig(DiffusersConfig):
    captioner: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    generator: str = "stabilityai/stable-diffusion-3.5-large"
    image_first: bool = True
    gen_batch_size: int = 1
    captioner_revision: str | None = None
    generator_revision: str | None = None
    pipeline_kwargs: dict | None = None
    call_kwargs: dict | None = None


class PairAdapter(HfAdapter):
    """An image-to-text model and a text-to-image pipeline, joined through the caption."""

    name: ClassVar[str] = "pair"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch_size=16,
        native_resolution=None,
        deterministic=True,
        needs=("transformers", "diffusers", "accelerate"),
    )

    config_class: ClassVar[type[PairConfig]] = PairConfig

    def _setup(self, config: PairConfig) -> None:
        if config.steps < 1 or config.max_new_tokens < 1 or config.gen_batch_size < 1:
            raise ConfigError("pair: steps, max_new_tokens and gen_batch_size must be positive")
        self._setup_pipeline(config)
        self.captioner_ref = config.captioner
        self.generator_ref = config.generator
        self.image_first = bool(config.image_first)
        self.gen_batch_size = int(config.gen_batch_size)
        self.captioner_revision = config.captioner_revision
        self.generator_revision = config.generator_revision
        self.pipeline_kwargs = dict(config.pipeline_kwargs or {})
        self.call_kwargs = dict(config.call_kwargs or {})
        #: (requested width, height) -> the size the pipeline really returned (FLUX rounds)
        self._rendered: dict[tuple[int, int], tuple[int, int]] = {}
        # Fail at construction, not on the first sample: a missing checkpoint is a run error.
        self.processor, self.model = self._load_captioner()
        self.pipe = self._load_pipeline()
        # The runner renders at capabilities.native_resolution unless --size says otherwise,
        # so the height/width arguments (the paper's 1024 by default) take effect there.
        self.capabilities = replace(type(self).capabilities, native_resolution=(self.width, self.height))

    # --- loading ---------------------------------------------------------------------------

    def _load_captioner(self) -> tuple[Any, Any]:
        from transformers import AutoModelForImageTextToText

        return self._load_processor_and_model(
            AutoModelForImageTextToText,
            self.captioner_ref,
            revision=self.captioner_revision,
            what="pair captioner",
            arg="captioner",
        )

    def _load_pipeline(self) -> Any:
        from diffusers import DiffusionPipeline

        return self._load_pipeline_from(
            DiffusionPipeline,
            self.generator_ref,
            revision=self.generator_revision,
            what="pair generator",
            arg="generator",
            **self.pipeline_kwargs,
        )

    # --- the round trip --------------------------------------------------------------------

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        return self._caption_chat(images, prompt, seeds, image_first=self.image_first)

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        import numpy as np
        import torch

        requested = self._requested_size(size)
        images: list[Image.Image] = []
        for chunk in batches(len(prompts), self.gen_batch_size):
            call: dict[str, Any] = {
                "prompt": [prompts[i] for i in chunk],
                "generator": [make_generator(seeds[i], self.generator_device) for i in chunk],
                **self._call_settings(requested),
            }
            if self.negative_prompt is not None:
                call["negative_prompt"] = [self.negative_prompt] * len(chunk)
            with torch.inference_mode():
                output = self.pipe(**call)
            array = output.images if hasattr(output, "images") else output[0]
            if isinstance(array, list):
                array = np.stack([np.asarray(a) for a in array])
            self._rendered[requested] = (int(array.shape[-2]), int(array.shape[-3]))
            images.extend(images_from_array(array))
        return images

    def _requested_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        width, height = size if size is not None else (self.width, self.height)
        return int(width), int(height)

    def _call_settings(self, size: tuple[int, int]) -> dict[str, Any]:
        """The pipeline arguments every prompt gets at ``size``; ``call_kwargs`` win."""
        width, height = size
        return {
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "height": height,
            "width": width,
            "output_type": "np",  # floats, so a NaN stays visible (PIL output would be black)
            **self.call_kwargs,
        }

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        """The pipeline call's steps, guidance and size (``call_kwargs`` included); width and
        height are the size the pipeline returned when it rounded the requested one (FLUX
        does), with the requested size in ``extra``."""
        requested = self._requested_size(size)
        call = self._call_settings(requested)
        extra = {k: v for k, v in call.items() if k not in ("num_inference_steps", "guidance_scale", "height", "width", "output_type")}
        rendered = self._rendered.get(requested, requested)
        if rendered != requested:
            extra.update(requested_width=requested[0], requested_height=requested[1])
            call = {**call, "width": rendered[0], "height": rendered[1]}
        if self.negative_prompt is not None:
            extra["negative_prompt"] = self.negative_prompt
        return pipeline_settings(self.pipe, call, dtype=self.dtype, extra=extra)

    # --- record ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "captioner": self.captioner_ref,
            "captioner_class": type(self.model).__name__,
            "captioner_revision": self.captioner_revision or model_revision(self.model),
            "generator": self.generator_ref,
            "generator_pipeline": type(self.pipe).__name__,
            "generator_revision": self.generator_revision,
            **self._runtime_record(),
            "caption_sampling": self._caption_sampling(self.model),
            "caption_batching": "one image at a time under torch.manual_seed(seed) (batch invariant)",
            "image_first": self.image_first,
            "generation": {
                **self._pipeline_describe(),
                "generator_device": str(self.generator_device),
                "gen_batch_size": self.gen_batch_size,
                "call_kwargs": self.call_kwargs,
            },
            "pipeline_kwargs": {k: (None if v is None else str(v)) for k, v in self.pipeline_kwargs.items()},
        }

    def close(self) -> None:
        self._release("model", "pipe", "processor")
