"""The paper's round-trip protocol as data, and the per-sample seed function.

Everything here is recorded in every run record, so two runs can be compared setting by
setting. The values come from the official UAE release (``demo.py`` in the UAE repository,
paper arXiv 2509.09666): the captioning instruction, sampling at temperature 0.7 with up to
512 new tokens, and generation at 1024x1024 with 40 steps and CFG 5.0.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: Verbatim from the official demo.py (a triple-quoted string): note the two spaces before
#: each newline and the trailing space; they reach the tokenizer, so they are kept.
OFFICIAL_CAPTION_PROMPT = (
    "You are an expert vision-language model.  \n"
    "Your task is: Given an input image, generate a **textual description** of the image. "
    'If there is text in the image, transcribe it inside double quotes "".  \n'
    "Now, carefully analyze the input image and output the full description. "
)

OFFICIAL_SOURCE = "UAE official repository, demo.py (gen_prompt / gen_image); paper arXiv 2509.09666"


@dataclass(frozen=True)
class CaptionSampling:
    """How the understanding half decodes its caption."""

    do_sample: bool = True
    temperature: float = 0.7
    max_new_tokens: int = 512


@dataclass(frozen=True)
class GenerationSettings:
    """How the generation half renders the caption back into an image."""

    width: int = 1024
    height: int = 1024
    num_inference_steps: int = 40
    guidance_scale: float = 5.0

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@dataclass(frozen=True)
class Protocol:
    """Instruction, sampling and generation settings of one round trip."""

    caption_prompt: str = OFFICIAL_CAPTION_PROMPT
    caption: CaptionSampling = field(default_factory=CaptionSampling)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    source: str = OFFICIAL_SOURCE
    name: str = "uae-paper"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_size(self, size: tuple[int, int] | None) -> Protocol:
        """The same protocol rendering at ``size`` (width, height); ``None`` keeps it."""
        if size is None:
            return self
        width, height = size
        return replace(self, generation=replace(self.generation, width=width, height=height), name=f"{self.name}@{width}x{height}")


PAPER_PROTOCOL = Protocol()


def seed_for(global_seed: int, sample_id: str) -> int:
    """The seed of one sample: a pure function of (global seed, sample id) in [0, 2**31).

    It never depends on batch position, batch size, shard or rank, so batching and sharding
    cannot change results. 2**31 keeps it valid for every framework's generator.
    """
    digest = hashlib.sha256(f"{int(global_seed)}\x00{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def shard_of(sample_id: str, num_shards: int) -> int:
    """Which of ``num_shards`` shards owns ``sample_id`` (stable, independent of order)."""
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    digest = hashlib.sha256(f"shard\x00{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards
