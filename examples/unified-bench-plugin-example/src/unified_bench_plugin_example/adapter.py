"""``example-echo``: the smallest complete adapter.

Replace the method bodies with calls into your model (and report the settings it runs with). Everything else (batching,
seeds, retries of failed samples, resume, scoring, the run record) is the runner's job.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration


@dataclass
class EchoConfig:
    """Every field becomes a ``--model-arg KEY=VALUE`` (typed, with a default and help)."""

    size: int = field(default=64, metadata={"help": "side of the generated images"})
    palette: str = field(default="warm", metadata={"help": "colour family", "choices": ("warm", "cool")})


class EchoAdapter(Adapter):
    """Captions an image by its brightness; draws a gradient chosen by the caption and seed."""

    name = "example-echo"
    config_class = EchoConfig  # the registry builds EchoAdapter(EchoConfig(**model_args))

    def __init__(self, config: EchoConfig | None = None) -> None:
        self.config = config or EchoConfig()
        # a real model would load its weights here (hub id or local path from the config)
        self.capabilities = Capabilities(max_batch_size=4, native_resolution=(self.config.size, self.config.size))

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        # one caption per image, in order; ``prompt`` is the benchmark's instruction
        captions = []
        for image in images:
            brightness = float(np.asarray(image.convert("L"), dtype=np.float32).mean()) / 255.0
            word = "bright" if brightness > 0.5 else "dark"
            captions.append(f"a {word} image, brightness {brightness:.2f}")
        return captions

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        # one RGB image per prompt; use seeds[i] for prompt i so results do not depend on batching
        width, height = size or (self.config.size, self.config.size)
        images = []
        for prompt, seed in zip(prompts, seeds):
            digest = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
            base = np.frombuffer(digest[:3], dtype=np.uint8).astype(np.float32)
            if self.config.palette == "cool":
                base = base[::-1]
            ramp = np.linspace(0.5, 1.0, width, dtype=np.float32)[None, :, None]
            pixels = np.broadcast_to(base * ramp, (height, width, 3))
            images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
        return images

    def caption_settings(self, prompt: str) -> ExecutedCaption:
        # what caption() really runs: this captioner ignores the instruction and samples nothing
        return ExecutedCaption(prompt="", do_sample=False, temperature=0.0, max_new_tokens=0, extra={"captioner": "brightness"})

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        # what generate() really runs: the resolution drawn, no denoising steps, no guidance
        width, height = size or (self.config.size, self.config.size)
        return ExecutedGeneration(width=width, height=height, num_inference_steps=0, guidance_scale=0.0, scheduler="none (gradient)", dtype="uint8")

    def describe(self) -> dict:
        # anything else the run record should hold: checkpoints and their revisions...
        return {"kind": "example", "size": self.config.size, "palette": self.config.palette}
