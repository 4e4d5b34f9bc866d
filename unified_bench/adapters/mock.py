"""``mock``: a deterministic, dependency-free test double of a unified model.

Captioning describes the mean colour of each image quadrant (plus a word picked by the
seed, so seed plumbing is visible in the output); generation parses those colours back
and paints the quadrants with seeded noise. The round trip is cheap, deterministic per
(sample, seed) and scores well above chance, which is what runner tests need.

Failures for tests are requested by sample id (``fail_caption_ids=a,b``...). The adapter
contract does not pass ids, so the mock recognises a sample by its seed: give
``seed=`` the run's ``--seed``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration

_WORDS = ("calm", "vivid", "quiet", "bold", "soft", "crisp", "warm", "cool", "hazy", "sharp", "muted")
_HEX = re.compile(r"#([0-9a-f]{6})")
_NAMED = {
    "red": (200, 40, 40), "orange": (230, 140, 30), "yellow": (220, 210, 50), "green": (50, 160, 60),
    "cyan": (40, 190, 200), "blue": (40, 70, 200), "purple": (130, 50, 170), "pink": (230, 130, 170),
    "brown": (120, 80, 40), "black": (10, 10, 10), "gray": (128, 128, 128), "white": (245, 245, 245),
}


@dataclass
class MockConfig:
    size: int = field(default=256, metadata={"help": "side of generated images when the runner asks for none"})
    max_batch_size: int = field(default=64, metadata={"help": "declared batch capability"})
    noise: float = field(default=12.0, metadata={"help": "std of the seeded pixel noise in generated images"})
    fail_caption_ids: tuple[str, ...] = field(default=(), metadata={"help": "caption() raises for these ids"})
    fail_generate_ids: tuple[str, ...] = field(default=(), metadata={"help": "generate() raises for these ids"})
    bad_type_ids: tuple[str, ...] = field(default=(), metadata={"help": "caption() returns an int for these ids"})
    empty_caption_ids: tuple[str, ...] = field(default=(), metadata={"help": "caption() returns '' for these ids"})
    nan_image_ids: tuple[str, ...] = field(default=(), metadata={"help": "generate() returns a float image with NaN"})
    slow_ms: float = field(default=0.0, metadata={"help": "sleep this long per generated image", "affects_outputs": False})


class MockAdapter(Adapter):
    """Deterministic test double: caption from colour statistics, image from caption + seed."""

    name = "mock"
    config_class = MockConfig

    def __init__(self, config: MockConfig | None = None) -> None:
        self.config = config or MockConfig()
        self.capabilities = Capabilities(
            max_batch_size=self.config.max_batch_size, native_resolution=(self.config.size, self.config.size)
        )

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list:
        ids = list(sample_ids or [""] * len(seeds))
        if set(self.config.fail_caption_ids).intersection(ids):
            raise RuntimeError("mock caption failure (fail_caption_ids)")
        bad, empty = set(self.config.bad_type_ids), set(self.config.empty_caption_ids)
        out: list = []
        for image, seed, sample_id in zip(images, seeds, ids):
            if sample_id in bad:
                out.append(len(prompt))  # deliberately not a str
            elif sample_id in empty:
                out.append("   ")
            else:
                out.append(describe_colours(image, seed))
        return out

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        ids = list(sample_ids or [""] * len(seeds))
        if set(self.config.fail_generate_ids).intersection(ids):
            raise RuntimeError("mock generate failure (fail_generate_ids)")
        nan = set(self.config.nan_image_ids)
        width, height = size or (self.config.size, self.config.size)
        out = []
        for prompt, seed, sample_id in zip(prompts, seeds, ids):
            if self.config.slow_ms:
                time.sleep(self.config.slow_ms / 1000.0)
            if sample_id in nan:
                out.append(Image.fromarray(np.full((height, width), np.nan, dtype=np.float32)))
            else:
                out.append(paint(prompt, seed, width, height, self.config.noise))
        return out

    def caption_settings(self, prompt: str) -> ExecutedCaption:
        # colour statistics: no instruction, no sampling, no token budget
        return ExecutedCaption(prompt="", do_sample=False, temperature=0.0, max_new_tokens=0, extra={"captioner": "colour statistics"})

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        width, height = size or (self.config.size, self.config.size)
        return ExecutedGeneration(width, height, 0, 0.0, scheduler="none (painted quadrants + seeded noise)", dtype="uint8")

    def describe(self) -> dict:
        return {"kind": "mock", "noise": self.config.noise, "size": self.config.size}


def describe_colours(image: Image.Image, seed: int) -> str:
    """'a vivid picture; quadrant colours #rrggbb #rrggbb #rrggbb #rrggbb; mostly blue'."""
    pixels = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    quads = [pixels[:16, :16], pixels[:16, 16:], pixels[16:, :16], pixels[16:, 16:]]
    colours = ["#%02x%02x%02x" % tuple(int(round(c)) for c in q.reshape(-1, 3).mean(0)) for q in quads]
    mean = pixels.reshape(-1, 3).mean(0)
    word = _WORDS[seed % len(_WORDS)]
    return f"a {word} picture; quadrant colours {' '.join(colours)}; mostly {nearest_colour_name(mean)}"


def nearest_colour_name(rgb: np.ndarray) -> str:
    return min(_NAMED, key=lambda name: float(np.sum((np.asarray(_NAMED[name]) - rgb) ** 2)))


def paint(prompt: str, seed: int, width: int, height: int, noise: float) -> Image.Image:
    """Quadrants in the caption's colours (named colours or a hash if none) plus seeded noise."""
    colours = [tuple(int(h[i : i + 2], 16) for i in (0, 2, 4)) for h in _HEX.findall(prompt.lower())]
    if not colours:
        words = [w for w in re.findall(r"[a-z]+", prompt.lower()) if w in _NAMED]
        colours = [_NAMED[w] for w in words] or [tuple(b for b in prompt.encode()[:3].ljust(3, b"\x80"))]
    colours = (colours * 4)[:4]
    canvas = np.empty((height, width, 3), dtype=np.int16)
    half_h, half_w = height // 2, width // 2
    canvas[:half_h, :half_w] = colours[0]
    canvas[:half_h, half_w:] = colours[1]
    canvas[half_h:, :half_w] = colours[2]
    canvas[half_h:, half_w:] = colours[3]
    if noise > 0:
        # a seeded 64x64 noise tile repeated over the canvas, in integers: the texture the
        # metrics need at a fraction of the cost of per-pixel float noise (the mock must not
        # dominate the runner's timings)
        rng = np.random.default_rng(seed)
        tile = np.rint(rng.standard_normal((min(64, height), min(64, width), 3), dtype=np.float32) * noise)
        reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
        canvas += np.tile(tile.astype(np.int16), reps)[:height, :width]
    np.clip(canvas, 0, 255, out=canvas)
    return Image.fromarray(canvas.astype(np.uint8))
