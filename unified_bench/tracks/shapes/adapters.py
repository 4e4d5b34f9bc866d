"""Calibration adapters of the Shapes track: ``shapes-oracle`` (upper bound) and ``blank`` (floor).

``shapes-oracle`` is the best a model can do through a caption of a given detail:

- ``caption``: the Shapes oracle network parses the image into a scene and the caption is
  that scene's canonical caption at ``detail`` (``long``: every attribute; ``short``: only
  shapes and colours). The adapter contract hands over images only, so the scene is the
  oracle's reading of the image — on clean renders it equals the ground truth almost always
  (see data_cards/shapes.md for the measured accuracy).
- ``generate``: the caption is parsed with the track's grammar, attributes the caption does
  not state (size and position for ``short``) are filled deterministically from the sample's
  seed, and the scene is rendered exactly.

``blank`` is the floor: a fixed caption (``"An image."``; the runner rejects empty captions
as adapter errors) and a plain background image, which holds no object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration
from unified_bench.tracks.shapes.captions import DETAILS, caption, parse
from unified_bench.tracks.shapes.render import BACKGROUND, blank_image, render
from unified_bench.tracks.shapes.scene import complete_scene
from unified_bench.core.images import file_sha256

NATIVE_SIZE = (256, 256)
BLANK_CAPTION = "An image."


@dataclass
class ShapesOracleConfig:
    detail: str = field(default="long", metadata={"help": "caption detail: long (every attribute) or short (shapes and colours)", "choices": DETAILS})
    checkpoint: str = field(default="bundled", metadata={"help": "oracle checkpoint: 'bundled' or a .safetensors path"})
    device: str = field(default="cpu", metadata={"help": "device of the oracle network"})


class ShapesOracleAdapter(Adapter):
    """Shapes track upper bound: caption the parsed scene at a detail level, re-render it exactly."""

    name = "shapes-oracle"
    config_class = ShapesOracleConfig
    capabilities = Capabilities(max_batch_size=64, native_resolution=NATIVE_SIZE, deterministic=True)

    def __init__(self, config: ShapesOracleConfig | None = None) -> None:
        from unified_bench.tracks.shapes.oracle import ShapesOracle
        from unified_bench.core.errors import ConfigError

        self.config = config or ShapesOracleConfig()
        if self.config.detail not in DETAILS:
            raise ConfigError(f"shapes-oracle: detail must be one of {', '.join(DETAILS)}, got {self.config.detail!r}")
        self.oracle = ShapesOracle(self.config.checkpoint, device=self.config.device)

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        return [caption(scene, self.config.detail) for scene in self.oracle.parse(images)]

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        out_size = tuple(size) if size else NATIVE_SIZE
        images = []
        for prompt, seed in zip(prompts, seeds):
            scene = complete_scene(parse(prompt), seed)
            images.append(render(scene, out_size, jitter_seed=seed) if scene.objects else blank_image(out_size))
        return images

    def caption_settings(self, prompt: str) -> ExecutedCaption:
        # the oracle network parses the scene; the caption is the grammar's text for it
        return ExecutedCaption(prompt="", do_sample=False, temperature=0.0, max_new_tokens=0, extra={"captioner": f"oracle parse, {self.config.detail} grammar"})

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        width, height = tuple(size) if size else NATIVE_SIZE
        return ExecutedGeneration(width, height, 0, 0.0, scheduler="none (exact renderer)", dtype="uint8")

    def describe(self) -> dict[str, Any]:
        return {
            "detail": self.config.detail,
            "oracle_checkpoint": str(self.oracle.path),
            "oracle_sha256": file_sha256(self.oracle.path),
        }

    def close(self) -> None:
        self.oracle = None  # type: ignore[assignment]


@dataclass
class BlankConfig:
    caption: str = field(default=BLANK_CAPTION, metadata={"help": "the fixed caption (must not be empty)"})


class BlankAdapter(Adapter):
    """Floor: a fixed caption and a blank background image, whatever the input."""

    name = "blank"
    config_class = BlankConfig
    capabilities = Capabilities(max_batch_size=256, native_resolution=NATIVE_SIZE, deterministic=True)

    def __init__(self, config: BlankConfig | None = None) -> None:
        self.config = config or BlankConfig()

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        return [self.config.caption for _ in images]

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        return [blank_image(tuple(size) if size else NATIVE_SIZE) for _ in prompts]

    def caption_settings(self, prompt: str) -> ExecutedCaption:
        return ExecutedCaption(prompt="", do_sample=False, temperature=0.0, max_new_tokens=0, extra={"captioner": "fixed caption"})

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        width, height = tuple(size) if size else NATIVE_SIZE
        return ExecutedGeneration(width, height, 0, 0.0, scheduler="none (blank background)", dtype="uint8")

    def describe(self) -> dict[str, Any]:
        return {"caption": self.config.caption, "background": list(BACKGROUND)}
