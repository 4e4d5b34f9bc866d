"""``emu3``: BAAI Emu3 through transformers' ``Emu3ForConditionalGeneration``.

Emu3 ships two checkpoints of one architecture: ``Emu3-Chat-hf`` (understanding) and
``Emu3-Gen-hf`` (generation). ``model`` is the chat checkpoint, ``gen_model`` the generation
one (the same directory may serve both; it is then loaded once).

- **caption**: the image is VQ-tokenised by the processor/model and the caption decoded
  with the protocol's sampling settings, one image at a time under ``torch.manual_seed``;
- **generate**: the prompt gets the official positive suffix and the processor's
  image-generation prefix (``<|image start|>H*W<|image token|>``); decoding is constrained
  by a prefix function (visual tokens, an end-of-line token after every row, then
  end-of-frame, end-of-image, end-of-sequence) and guided by classifier-free guidance
  against the official negative prompt (which gets the same image prefix, as in the
  official ``mode='G'`` processing). Defaults follow the official Emu3 generation script:
  CFG 3.0, top-k 2048, 720x720 (image area 518400).

Emu3 renders any aspect ratio: ``size`` (width, height) becomes the processor's ``ratio`` and
``image_area``; the token grid is rounded to the VQ factor (8) and the decoded image is
resized to the exact requested size when rounding changed it.
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
from unified_bench.core.errors import ConfigError
from unified_bench.core.protocol import ExecutedGeneration

logger = logging.getLogger(__name__)

EMU3_CHAT = "BAAI/Emu3-Chat-hf"
EMU3_GEN = "BAAI/Emu3-Gen-hf"
#: From the official Emu3 generation example.
POSITIVE_SUFFIX = " masterpiece, film grained, best quality."
NEGATIVE_PROMPT = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry."
)


def image_token_budget(height: int, width: int) -> int:
    """Tokens Emu3 emits for an ``height x width`` token grid: each row of visual tokens
    ends with an end-of-line token, then end-of-frame, end-of-image and end-of-sequence."""
    return height * (width + 1) + 3


def allowed_next_tokens(
    offset: int, *, height: int, width: int, visual: list[int], eol: int, eof: int, eoi: int, eos: int, pad: int
) -> list[int]:
    """The tokens allowed at distance ``offset`` after the ``<|image token|>`` wrapper (the
    first generated token is offset 1): the Emu3 image grammar as a pure function."""
    rows_end = (width + 1) * height
    if offset <= rows_end and offset % (width + 1) == 0:
        return [eol]
    if offset == rows_end + 1:
        return [eof]
    if offset == rows_end + 2:
        return [eoi]
    if offset == rows_end + 3:
        return [eos]
    if offset > rows_end + 3:
        return [pad]
    return visual


@dataclass
class Emu3Config(HfRuntimeConfig):
    model: str = EMU3_CHAT
    gen_model: str | None = EMU3_GEN
    revision: str | None = None
    gen_revision: str | None = None
    guidance_scale: float = 3.0
    top_k: int = 2048
    image_area: int = 518400
    positive_suffix: str = POSITIVE_SUFFIX
    negative_prompt: str = NEGATIVE_PROMPT


class Emu3Adapter(HfAdapter):
    """Emu3 chat + generation checkpoints through transformers."""

    name: ClassVar[str] = "emu3"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch_size=8,
        native_resolution=(720, 720),
        deterministic=True,
        needs=("transformers", "accelerate"),
    )

    config_class: ClassVar[type[Emu3Config]] = Emu3Config

    def _setup(self, config: Emu3Config) -> None:
        self.model_ref = config.model
        self.gen_ref = config.gen_model or config.model
        self.revision = config.revision
        self.gen_revision = config.gen_revision if config.gen_model else config.revision
        self.guidance_scale = cfg_scale("emu3", config.guidance_scale)
        self.top_k = int(config.top_k)
        self.image_area = int(config.image_area)
        self.positive_suffix = config.positive_suffix
        self.negative_prompt = config.negative_prompt
        self.processor, self.model = self._load(self.model_ref, self.revision, "model")
        if (self.gen_ref, self.gen_revision) == (self.model_ref, self.revision):
            self.gen_processor, self.gen_model = self.processor, self.model
        else:
            self.gen_processor, self.gen_model = self._load(self.gen_ref, self.gen_revision, "gen_model")
        side = int(round(self.image_area**0.5))
        self.capabilities = replace(type(self).capabilities, native_resolution=(side, side))

    def _load(self, ref: str, revision: str | None, arg: str) -> tuple[Any, Any]:
        from transformers import Emu3ForConditionalGeneration

        return self._load_processor_and_model(
            Emu3ForConditionalGeneration, ref, revision=revision, what=f"emu3 {arg}", arg=arg
        )

    # --- understanding ---------------------------------------------------------------------

    def _caption_text(self, prompt: str) -> str:
        try:
            return chat_text(self.processor, chat_messages(prompt, with_image=True))
        except ConfigError:  # checkpoints without a chat template: the format of the model card
            return f"USER: {self.processor.image_token}{prompt} ASSISTANT:"

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        text = self._caption_text(prompt)
        return self._caption_each(
            self.model,
            images,
            seeds,
            lambda image: self.processor(text=[text], images=[image], return_tensors="pt"),
        )

    # --- generation ------------------------------------------------------------------------

    def _grammar(self, height: int, width: int) -> Any:
        """The prefix-constraint callback for one token grid."""
        import torch

        processor, model = self.gen_processor, self.gen_model
        tokenizer = processor.tokenizer
        ids = {
            "eol": model.vocabulary_mapping.eol_token_id,
            "eof": tokenizer.convert_tokens_to_ids(processor.eof_token),
            "eoi": tokenizer.convert_tokens_to_ids(processor.image_end_token),
            "eos": tokenizer.eos_token_id,
            "pad": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        }
        wrapper = tokenizer.convert_tokens_to_ids(processor.fake_token_around_image)
        visual = list(model.vocabulary_mapping.image_tokens)

        def prefix_allowed_tokens_fn(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            # The last wrapper token is the one the processor appended to this prompt.
            position = int(torch.nonzero(input_ids == wrapper, as_tuple=True)[0][-1])
            offset = input_ids.shape[0] - position  # the next token's distance from the wrapper
            return allowed_next_tokens(offset, height=height, width=width, visual=visual, **ids)

        return prefix_allowed_tokens_fn

    def _output_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        width, height = size if size is not None else self.capabilities.native_resolution
        return int(width), int(height)

    @staticmethod
    def _layout(width: int, height: int) -> dict[str, Any]:
        """The processor's image-generation layout for an output of ``width x height``."""
        return {"return_for_image_generation": True, "ratio": f"{width}:{height}", "image_area": width * height}

    def _image_generate_kwargs(self, grid_h: int, grid_w: int) -> dict[str, Any]:
        """The sampling arguments of one image's ``generate`` (a ``grid_h x grid_w`` token grid)."""
        return {
            "max_new_tokens": image_token_budget(grid_h, grid_w),
            "do_sample": True,
            "top_k": self.top_k,
            "guidance_scale": self.guidance_scale,
        }

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        import torch

        width, height = self._output_size(size)
        processor, model = self.gen_processor, self.gen_model
        device = input_device(model, self.device)
        layout = self._layout(width, height)
        negative = processor(text=[self.negative_prompt], return_tensors="pt", **layout)
        negative.pop("image_sizes")
        negative = negative.to(device)
        image_processor = processor.image_processor
        images: list[Image.Image] = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            inputs = processor(text=[prompt + self.positive_suffix], return_tensors="pt", **layout)
            grid_h, grid_w = (int(v) for v in inputs.pop("image_sizes")[0])
            inputs = inputs.to(device)
            with torch.inference_mode(), seeded(seed, device):
                output = model.generate(
                    **inputs,
                    **self._image_generate_kwargs(grid_h, grid_w),
                    prefix_allowed_tokens_fn=self._grammar(grid_h, grid_w),
                    negative_prompt_ids=negative["input_ids"],
                    negative_prompt_attention_mask=negative["attention_mask"],
                    return_dict_in_generate=True,
                )
                tokens = output.sequences[:, inputs["input_ids"].shape[1] :]
                decoded = model.decode_image_tokens(image_tokens=tokens, height=grid_h, width=grid_w)
            pixels = unnormalize(
                decoded.float().permute(0, 2, 3, 1).cpu().numpy(),
                getattr(image_processor, "image_mean", None),
                getattr(image_processor, "image_std", None),
            )
            images.extend(images_from_array(pixels))
        return resize_to(images, (int(width), int(height)))

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        """width/height: what the VQ decoder renders, i.e. the processor's token grid for the
        requested size times the decoder's upsampling (a bicubic resize to the requested size,
        named in ``extra``, when rounding to the grid changed it). Steps: every token sampled
        (visual tokens plus the grid's end-of-line and end tokens)."""
        width, height = self._output_size(size)
        grid_h, grid_w = (int(v) for v in self.gen_processor(text=[""], **self._layout(width, height))["image_sizes"][0])
        factor = int(self.gen_model.model.vqmodel.vision_spatial_factor)
        return autoregressive_settings(
            self.gen_model,
            self._image_generate_kwargs(grid_h, grid_w),
            rendered=(grid_w * factor, grid_h * factor),
            output=(width, height),
            steps=image_token_budget(grid_h, grid_w),
            image_tokens=grid_h * grid_w,
            extra={"positive_suffix": self.positive_suffix, "negative_prompt": self.negative_prompt},
        )

    # --- record ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_ref,
            "revision": self.revision or model_revision(self.model),
            "gen_model": self.gen_ref,
            "gen_revision": self.gen_revision or model_revision(self.gen_model),
            **self._runtime_record(),
            "caption_sampling": self._caption_sampling(self.model),
            "generation": {
                "mode": "autoregressive VQ tokens, prefix-constrained, classifier-free guidance",
                "guidance_scale": self.guidance_scale,
                "top_k": self.top_k,
                "image_area": self.image_area,
                "native_resolution": list(self.capabilities.native_resolution),
                "positive_suffix": self.positive_suffix,
                "negative_prompt": self.negative_prompt,
            },
            "batching": "one sample at a time under torch.manual_seed(seed) (batch invariant)",
        }

    def close(self) -> None:
        self._release("model", "gen_model", "processor", "gen_processor")
