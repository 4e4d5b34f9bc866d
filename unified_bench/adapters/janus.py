"""``janus-pro``: DeepSeek Janus-Pro through transformers' ``JanusForConditionalGeneration``.

One model does both halves:

- **caption**: ``generation_mode="text"``; the image goes through the SigLIP understanding
  encoder and the caption is decoded with the protocol's sampling settings;
- **generate**: ``generation_mode="image"``; 576 VQ tokens are sampled with classifier-free
  guidance (the unconditional row keeps only BOS and the image-start token, as in the
  official code) and decoded by the VQ decoder into a 384x384 image.

Defaults follow the official Janus-Pro text-to-image script: CFG weight 5, temperature 1.
The VQ decoder emits values in [-1, 1]; they are mapped with the processor's mean/std
(0.5/0.5 for the released checkpoints, i.e. ``(x + 1) / 2``).

Every sample runs alone under ``torch.manual_seed(seed)``: sampling draws from the global
RNG, so batching would make a sample depend on its neighbours (batch invariance first; the
cost is GPU throughput). The native resolution is fixed by the VQ decoder; a different
``size`` is honoured by resizing the decoded image (bicubic), and ``describe()`` says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from PIL import Image

from unified_bench.adapters.base import Capabilities
from unified_bench.adapters.hf_common import (
    HfAdapter,
    HfRuntimeConfig,
    autoregressive_settings,
    cfg_scale,
    chat_messages,
    chat_text,
    images_from_array,
    input_device,
    model_revision,
    resize_to,
    seeded,
    unnormalize,
)
from unified_bench.core.protocol import ExecutedGeneration

logger = logging.getLogger(__name__)

JANUS_PRO_1B = "deepseek-community/Janus-Pro-1B"
JANUS_PRO_7B = "deepseek-community/Janus-Pro-7B"


@dataclass
class JanusConfig(HfRuntimeConfig):
    model: str = JANUS_PRO_7B
    revision: str | None = None
    guidance_scale: float = 5.0
    image_temperature: float = 1.0
    image_first: bool = True


class JanusProAdapter(HfAdapter):
    """Janus-Pro, both directions, through transformers."""

    name: ClassVar[str] = "janus-pro"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch_size=16,
        native_resolution=(384, 384),
        deterministic=True,
        needs=("transformers", "accelerate"),
    )

    config_class: ClassVar[type[JanusConfig]] = JanusConfig

    def _setup(self, config: JanusConfig) -> None:
        self.model_ref = config.model
        self.revision = config.revision
        self.guidance_scale = cfg_scale("janus-pro", config.guidance_scale)
        self.image_temperature = float(config.image_temperature)
        self.image_first = bool(config.image_first)
        self.processor, self.model = self._load()
        self.native_size = self._native_size()
        # The runner renders at capabilities.native_resolution unless --size says otherwise.
        self.capabilities = replace(type(self).capabilities, native_resolution=self.native_size)

    def _load(self) -> tuple[Any, Any]:
        from transformers import JanusForConditionalGeneration

        processor, model = self._load_processor_and_model(
            JanusForConditionalGeneration, self.model_ref, revision=self.revision, what="janus-pro", arg="model"
        )
        generation_kwargs = getattr(model.generation_config, "generation_kwargs", None) or {}
        if "boi_token_id" not in generation_kwargs:
            # Image mode needs it for the unconditional CFG row; recover it from the tokenizer.
            boi = processor.tokenizer.convert_tokens_to_ids(processor.image_start_token)
            model.generation_config.generation_kwargs = {**generation_kwargs, "boi_token_id": boi}
        return processor, model

    def _native_size(self) -> tuple[int, int]:
        vq = self.model.config.vq_config
        side = int(vq.num_patches) * 2 ** (len(vq.channel_multiplier) - 1)
        return (side, side)

    # --- understanding ---------------------------------------------------------------------

    def _caption_generate_kwargs(self) -> dict[str, Any]:
        # Text mode runs without classifier-free guidance whatever generation_config says
        # (JanusForConditionalGeneration.generate sets it to None there; said here for the report).
        return {**super()._caption_generate_kwargs(), "generation_mode": "text", "guidance_scale": None}

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        text = chat_text(self.processor, chat_messages(prompt, with_image=True, image_first=self.image_first))
        return self._caption_each(
            self.model,
            images,
            seeds,
            lambda image: self.processor(text=[text], images=[image], generation_mode="text", return_tensors="pt"),
        )

    # --- generation ------------------------------------------------------------------------

    def _image_generate_kwargs(self) -> dict[str, Any]:
        return {
            "generation_mode": "image",
            "do_sample": True,
            "temperature": self.image_temperature,
            "guidance_scale": self.guidance_scale,
            "num_return_sequences": 1,
            "use_cache": True,
        }

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        import torch

        device = input_device(self.model, self.device)
        image_processor = self.processor.image_processor
        images: list[Image.Image] = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            text = chat_text(self.processor, chat_messages(prompt, with_image=False))
            inputs = self.processor(text=[text], generation_mode="image", return_tensors="pt").to(device)
            with torch.inference_mode(), seeded(seed, device):
                tokens = self.model.generate(**inputs, **self._image_generate_kwargs())
                decoded = self.model.decode_image_tokens(tokens)  # [1, H, W, 3] in [-1, 1]
            pixels = unnormalize(
                decoded.float().cpu().numpy(),
                getattr(image_processor, "image_mean", None),
                getattr(image_processor, "image_std", None),
            )
            images.extend(images_from_array(pixels))
        return resize_to(images, size)

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        """width/height: what the VQ decoder renders (the native size); a requested other size
        is a bicubic resize of it, named in ``extra``. Steps: the image tokens sampled."""
        tokens = int(self.model.config.vision_config.num_image_tokens)
        output = (int(size[0]), int(size[1])) if size is not None else self.native_size
        return autoregressive_settings(
            self.model, self._image_generate_kwargs(), rendered=self.native_size, output=output, steps=tokens, image_tokens=tokens
        )

    # --- record ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_ref,
            "revision": self.revision or model_revision(self.model),
            **self._runtime_record(),
            "caption_sampling": self._caption_sampling(self.model),
            "image_first": self.image_first,
            "generation": {
                "mode": "autoregressive VQ tokens with classifier-free guidance",
                "guidance_scale": self.guidance_scale,
                "temperature": self.image_temperature,
                "image_tokens": int(self.model.config.vision_config.num_image_tokens),
                "native_resolution": list(self.native_size),
                "other_sizes": "decoded at the native resolution, then bicubic-resized",
            },
            "batching": "one sample at a time under torch.manual_seed(seed) (batch invariant)",
        }

    def close(self) -> None:
        self._release("model", "processor")
