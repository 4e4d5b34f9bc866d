"""``cosmos3``: NVIDIA Cosmos 3 (Nano, Super), one checkpoint, both halves, two libraries.

A Cosmos 3 checkpoint is a mixture-of-transformers with a Reasoner tower (understanding,
text out) and a Generator tower (diffusion, vision out) over one shared embedding. The
installed libraries split it along that line, and both read the same hub repository:

- **caption**: transformers' ``Cosmos3OmniForConditionalGeneration`` (a Qwen3-VL; loaded
  through ``AutoModelForImageTextToText``, which also maps ``cosmos3_edge``) loads the
  Reasoner tower only, dropping the Generator keys; the image and the instruction go in one
  chat turn and the caption is sampled with the protocol's settings, one image at a time
  under ``torch.manual_seed``;
- **generate**: diffusers' ``Cosmos3OmniPipeline`` runs the whole MoT in text-to-image mode
  (``num_frames=1``), one prompt per call with its own ``torch.Generator``.

Defaults follow NVIDIA's Diffusers text-to-image cookbook for Nano and Super
(``cookbooks/cosmos3/generator/audiovisual/run_with_diffusers.ipynb``): 35 steps, guidance
6.0, UniPC with ``flow_shift=10``, an empty negative prompt, the resolution and duration
templates off. The cookbook renders 1280x720 (16:9); the benchmark's photos are compared
square, so the default is the square bin of the same 720p tier, 960x960 (the pipeline's
``_ACTION_RESOLUTION_BINS["720"]["1.0"]``). Height and width must be multiples of the VAE's
spatial factor (16): another requested size is rendered at the nearest such size and
bicubic-resized, and the report says so.

NVIDIA's Generator ships with a guardrail (``cosmos_guardrail``: a text check on the prompt
and a video check that may blur faces in the output). It is on by default, as NVIDIA runs it;
``guardrail=false`` turns it off (the licence terms are the user's to meet). Either way the
setting is in the executed protocol, since it can change the pixels.
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
    cfg_scale,
    images_from_array,
    make_generator,
    model_revision,
    pipeline_settings,
    resize_to,
)
from unified_bench.core.errors import ConfigError
from unified_bench.core.protocol import ExecutedGeneration

logger = logging.getLogger(__name__)

COSMOS3_NANO = "nvidia/Cosmos3-Nano"
COSMOS3_SUPER = "nvidia/Cosmos3-Super"


def render_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """The size the pipeline accepts closest to ``width x height``: each side rounded to a
    multiple of the VAE's spatial ``factor`` (halves up, at least one factor)."""
    return tuple(max(factor, (2 * int(side) + factor) // (2 * factor) * factor) for side in (width, height))  # type: ignore[return-value]


@dataclass
class Cosmos3Config(DiffusersConfig):
    model: str = COSMOS3_NANO
    revision: str | None = None
    #: the Generator checkpoint when it is not ``model`` (a fine-tuned Generator, a local copy)
    gen_model: str | None = None
    gen_revision: str | None = None
    steps: int = 35
    guidance_scale: float = 6.0
    height: int = 960
    width: int = 960
    negative_prompt: str | None = ""
    flow_shift: float | None = 10.0  # None: the checkpoint's scheduler_config as it is
    use_system_prompt: bool | None = None  # None: the checkpoint's default_use_system_prompt
    resolution_template: bool = False
    guardrail: bool = True
    image_first: bool = True


class Cosmos3Adapter(HfAdapter):
    """Cosmos 3: Reasoner captions (transformers), Generator draws (diffusers)."""

    name: ClassVar[str] = "cosmos3"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_batch_size=8,
        native_resolution=(960, 960),
        deterministic=True,
        needs=("transformers", "diffusers", "accelerate", "cosmos_guardrail (unless guardrail=false)"),
    )

    config_class: ClassVar[type[Cosmos3Config]] = Cosmos3Config

    def _setup(self, config: Cosmos3Config) -> None:
        self._setup_pipeline(config)
        self.guidance_scale = cfg_scale("cosmos3", config.guidance_scale)
        self.model_ref = config.model
        self.revision = config.revision
        self.gen_ref = config.gen_model or config.model
        self.gen_revision = config.gen_revision if config.gen_model else config.revision
        self.flow_shift = None if config.flow_shift is None else float(config.flow_shift)
        self.use_system_prompt = config.use_system_prompt
        self.resolution_template = bool(config.resolution_template)
        self.guardrail = bool(config.guardrail)
        self.image_first = bool(config.image_first)
        self.processor, self.model = self._load_processor_and_model(
            _reasoner_class(), self.model_ref, revision=self.revision, what="cosmos3 reasoner", arg="model"
        )
        self.pipe = self._load_pipeline()
        self.spatial_factor = int(self.pipe.vae.config.scale_factor_spatial)
        self.capabilities = replace(type(self).capabilities, native_resolution=(self.width, self.height))

    def _load_pipeline(self) -> Any:
        from diffusers import Cosmos3OmniPipeline, UniPCMultistepScheduler

        try:
            pipe = self._load_pipeline_from(
                Cosmos3OmniPipeline,
                self.gen_ref,
                revision=self.gen_revision,
                what="cosmos3 generator",
                arg="gen_model",
                safety_checker=None,  # built by the pipeline when enable_safety_checker is on
                enable_safety_checker=self.guardrail,
            )
        except ImportError as err:  # CosmosSafetyChecker without cosmos_guardrail installed
            raise ConfigError(
                f"cosmos3: the Generator's guardrail needs the cosmos_guardrail package ({err}); "
                "`pip install cosmos_guardrail`, or pass --model-arg guardrail=false"
            ) from err
        if self.flow_shift is not None:
            pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=self.flow_shift)
        return pipe

    # --- understanding ---------------------------------------------------------------------

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        return self._caption_chat(images, prompt, seeds, image_first=self.image_first)

    # --- generation ------------------------------------------------------------------------

    def _output_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        width, height = size if size is not None else (self.width, self.height)
        return int(width), int(height)

    def _call_settings(self, size: tuple[int, int] | None) -> dict[str, Any]:
        """The pipeline arguments of one prompt for an output of ``size`` (prompt and generator aside)."""
        width, height = render_size(*self._output_size(size), self.spatial_factor)
        return {
            "negative_prompt": self.negative_prompt,
            "num_frames": 1,  # text-to-image
            "height": height,
            "width": width,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "use_system_prompt": self.use_system_prompt,
            "add_resolution_template": self.resolution_template,
            "add_duration_template": False,  # never applied to a single frame
            "enable_safety_check": self.guardrail,
            "output_type": "np",  # floats, so a NaN stays visible
        }

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        import torch

        call = self._call_settings(size)
        images: list[Image.Image] = []
        for prompt, seed in zip(prompts, seeds, strict=True):  # the pipeline runs one sample per call
            with torch.inference_mode():
                output = self.pipe(prompt=prompt, generator=make_generator(seed, self.generator_device), **call)
            images.extend(images_from_array(output.video[:1]))  # [frames, H, W, 3] -> the one frame
        return resize_to(images, self._output_size(size))

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        """width/height: what the pipeline renders (the requested size rounded to the VAE's
        factor; the bicubic resize to the requested size, when it differs, is in ``extra``)."""
        call = self._call_settings(size)
        use_system_prompt = call["use_system_prompt"]
        extra: dict[str, Any] = {
            "negative_prompt": call["negative_prompt"],
            "flow_shift": self.pipe.scheduler.config.get("flow_shift"),
            "system_prompt": bool(self.pipe.config.default_use_system_prompt if use_system_prompt is None else use_system_prompt),
            "resolution_template": call["add_resolution_template"],
            "guardrail": self.guardrail,
        }
        output = self._output_size(size)
        if output != (call["width"], call["height"]):
            extra.update(output_width=output[0], output_height=output[1], resize="bicubic")
        return pipeline_settings(self.pipe, call, dtype=self.dtype, extra=extra)

    # --- record ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_ref,
            "revision": self.revision or model_revision(self.model),
            "reasoner_class": type(self.model).__name__,
            "gen_model": self.gen_ref,
            "gen_revision": self.gen_revision,
            "generator_pipeline": type(self.pipe).__name__,
            **self._runtime_record(),
            "caption_sampling": self._caption_sampling(self.model),
            "image_first": self.image_first,
            "generation": {
                **self._pipeline_describe(),
                "flow_shift": self.flow_shift,
                "use_system_prompt": self.use_system_prompt,
                "resolution_template": self.resolution_template,
                "guardrail": self.guardrail,
                "generator_device": str(self.generator_device),
                "other_sizes": f"rendered at the nearest multiple of {self.spatial_factor}, then bicubic-resized",
            },
            "batching": "one sample at a time, each with its own seed (batch invariant)",
        }

    def close(self) -> None:
        self._release("model", "pipe", "processor")


def _reasoner_class() -> Any:
    # The Auto class maps both cosmos3_omni (Nano, Super) and cosmos3_edge checkpoints.
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText
