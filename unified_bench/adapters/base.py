"""The adapter contract: what a model author writes to put a model through the round trip.

An adapter is batch-first and typed::

    class MyModel(Adapter):
        name = "my-model"
        capabilities = Capabilities(max_batch_size=4, native_resolution=(1024, 1024))

        def caption(self, images, *, prompt, seeds, sample_ids): ...  # list[PIL.Image] -> list[str]
        def generate(self, prompts, *, seeds, size, sample_ids): ...  # list[str] -> list[PIL.Image]
        def caption_settings(self, prompt): ...        # -> ExecutedCaption: what caption() ran
        def generation_settings(self, size): ...       # -> ExecutedGeneration: what generate() ran

``seeds[i]`` and ``sample_ids[i]`` belong to sample ``i`` (the seed derives from the global
seed and the sample id only), so results do not depend on batching. The runner always passes
``sample_ids``; a direct Python caller may leave them out where an adapter does not need them.
The two ``*_settings`` methods report the settings the adapter really runs with (not the ones
it was asked for): they are the run record's executed protocol, which the leaderboard checks
against a track. Outputs are checked at the boundary by :func:`check_captions` /
:func:`check_images`: a wrong type, count, an empty caption, a non-RGB or NaN image becomes a
per-sample error, never a crash of the run.

Arguments that change how outputs are fetched but not what they are (a server's address,
timeouts, retries, request concurrency) say so with ``affects_outputs: False`` in their
dataclass field's metadata (``ArgSpec(affects_outputs=False)``): a resumed run compares only
the others, and records these per invocation. :meth:`Adapter.output_identity` adds what the
arguments cannot say (the model a server serves).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration


@dataclass(frozen=True)
class Capabilities:
    """What the runner may assume about an adapter."""

    max_batch_size: int = 1
    native_resolution: tuple[int, int] | None = None
    deterministic: bool = True  # same seeds -> same outputs
    can_caption: bool = True
    can_generate: bool = True
    needs: tuple[str, ...] = ()  # extra packages or services, shown by `unified-bench models`


@dataclass(frozen=True)
class SampleOutcome:
    """One sample's result at one stage: a value, or the reason it failed."""

    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Adapter(ABC):
    name: ClassVar[str] = "adapter"
    capabilities: ClassVar[Capabilities] = Capabilities()

    @abstractmethod
    def caption(
        self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None
    ) -> list[str]:
        """Describe each image (understanding)."""

    @abstractmethod
    def generate(
        self,
        prompts: list[str],
        *,
        seeds: list[int],
        size: tuple[int, int] | None,
        sample_ids: list[str] | None = None,
    ) -> list[Image.Image]:
        """Render each prompt (generation). ``size`` is (width, height) or None for native."""

    def caption_settings(self, prompt: str) -> ExecutedCaption | None:
        """The settings ``caption(..., prompt=prompt)`` really runs with; None: not reported."""
        return None

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration | None:
        """The settings ``generate(..., size=size)`` really runs with; None: not reported."""
        return None

    def describe(self) -> dict[str, Any]:
        """Settings recorded in the run record (checkpoints, sampling, resolution...)."""
        return {}

    def output_identity(self) -> dict[str, Any] | None:
        """What decides the outputs beyond the output-affecting arguments (a served model's
        name and settings); a resumed run must match it. None: the arguments say it all."""
        return None

    def close(self) -> None:
        """Free model memory."""


@dataclass
class ArgSpec:
    """A documented adapter argument (for ``--model-arg`` and ``unified-bench models``)."""

    name: str
    default: Any = None
    help: str = ""
    choices: Sequence[Any] | None = field(default=None)
    type: Any = None  # for coercing --model-arg strings; None -> the default's type
    affects_outputs: bool = True  # False: transport only (timeouts, retries); not compared on resume


def check_captions(outputs: Any, expected: int) -> list[SampleOutcome]:
    """Validate ``caption`` output; per-sample outcomes (a wrong count fails the whole batch)."""
    if not isinstance(outputs, (list, tuple)):
        return [SampleOutcome(error=f"caption() returned {type(outputs).__name__}, expected list[str]")] * expected
    if len(outputs) != expected:
        msg = f"caption() returned {len(outputs)} captions for {expected} images"
        return [SampleOutcome(error=msg)] * expected
    checked = []
    for item in outputs:
        if not isinstance(item, str):
            checked.append(SampleOutcome(error=f"caption is {type(item).__name__}, expected str"))
        elif not item.strip():
            checked.append(SampleOutcome(error="empty caption"))
        else:
            checked.append(SampleOutcome(value=item))
    return checked


def check_images(outputs: Any, expected: int) -> list[SampleOutcome]:
    """Validate ``generate`` output: RGB PIL images with finite pixels, one per prompt."""
    if not isinstance(outputs, (list, tuple)):
        return [SampleOutcome(error=f"generate() returned {type(outputs).__name__}, expected list[PIL.Image]")] * expected
    if len(outputs) != expected:
        msg = f"generate() returned {len(outputs)} images for {expected} prompts"
        return [SampleOutcome(error=msg)] * expected
    checked = []
    for item in outputs:
        if not isinstance(item, Image.Image):
            checked.append(SampleOutcome(error=f"generated image is {type(item).__name__}, expected PIL.Image"))
        elif item.width < 1 or item.height < 1:
            checked.append(SampleOutcome(error="generated image is empty (0 pixels)"))
        # Before the mode check: only float ("F") images can hold NaN, and an adapter hands
        # one back for a sample whose pixels went non-finite (an RGB image never can).
        elif not np.isfinite(np.asarray(item, dtype=np.float32)).all():
            checked.append(SampleOutcome(error="generated image contains NaN or inf"))
        elif item.mode != "RGB":
            checked.append(SampleOutcome(error=f"generated image has mode {item.mode!r}, expected 'RGB'"))
        else:
            checked.append(SampleOutcome(value=item))
    return checked
