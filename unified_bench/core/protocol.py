"""The paper's round-trip protocol as data, and the per-sample seed function.

Everything here is recorded in every run record, so two runs can be compared setting by
setting. The values come from the official UAE release (``demo.py`` in the UAE repository,
paper arXiv 2509.09666): the captioning instruction, sampling at temperature 0.7 with up to
512 new tokens, and generation at 1024x1024 with 40 steps and CFG 5.0.
"""

from __future__ import annotations

import json
import math
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


# ---- the protocol as executed ------------------------------------------------------------
# The requested protocol above is what the run asked for; an adapter reports what it really
# ran through ``Adapter.caption_settings`` / ``Adapter.generation_settings``. A field left
# None is one the adapter did not report; the record keeps both, and the leaderboard compares
# the executed settings (never the requested ones) with a track's protocol.


@dataclass(frozen=True)
class ExecutedCaption:
    """The settings one ``caption`` call really ran with."""

    prompt: str | None = None  # the instruction that reached the model
    do_sample: bool | None = None
    temperature: float | None = None
    max_new_tokens: int | None = None
    #: anything else that shapes the sampled distribution (top_p, top_k, repetition_penalty...)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutedCaption:
        return cls(**{k: (dict(v) if k == "extra" else v) for k, v in data.items()})


@dataclass(frozen=True)
class ExecutedGeneration:
    """The settings one ``generate`` call really ran with."""

    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    scheduler: str | None = None
    dtype: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutedGeneration:
        return cls(**{k: (dict(v) if k == "extra" else v) for k, v in data.items()})


_SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,),
    "do_sample": (bool,),
    "temperature": (int, float),
    "max_new_tokens": (int,),
    "width": (int,),
    "height": (int,),
    "num_inference_steps": (int,),
    "guidance_scale": (int, float),
    "scheduler": (str,),
    "dtype": (str,),
}


def check_settings(report: Any, expected: type) -> str | None:
    """Why an adapter's settings report is unusable (None when it is a well-typed ``expected``):
    the record must stay valid JSON of the schema's types whatever a third-party adapter returns."""
    if not isinstance(report, expected):
        return f"returned {type(report).__name__}, expected {expected.__name__} or None"
    for name, types in _SETTING_TYPES.items():
        value = getattr(report, name, None)
        if value is None or not hasattr(report, name):
            continue
        if isinstance(value, bool) and bool not in types:
            return f"{name} is a bool"
        if not isinstance(value, types) or (isinstance(value, float) and not math.isfinite(value)):
            return f"{name} is {value!r}, expected {' or '.join(t.__name__ for t in types)}"
    try:
        json.dumps(report.extra, allow_nan=False)
    except (TypeError, ValueError) as err:
        return f"extra is not plain JSON ({err})"
    return None


@dataclass(frozen=True)
class ExecutedProtocol:
    """What a run really executed: one settings record per stage (None = not reported).

    ``varied`` names the stages whose settings changed between calls of one run; the stage's
    field then holds the first call's settings and the run is not protocol-conformant.
    """

    caption: ExecutedCaption | None = None
    generation: ExecutedGeneration | None = None
    varied: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "caption": self.caption.to_dict() if self.caption else None,
            "generation": self.generation.to_dict() if self.generation else None,
            "varied": list(self.varied),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutedProtocol:
        caption, generation = data.get("caption"), data.get("generation")
        return cls(
            ExecutedCaption.from_dict(caption) if caption else None,
            ExecutedGeneration.from_dict(generation) if generation else None,
            tuple(data.get("varied") or ()),
        )

    def observe(self, stage: str, settings: ExecutedCaption | ExecutedGeneration | None) -> ExecutedProtocol:
        """This record after one more call of ``stage`` ("caption" or "generation") that
        reported ``settings``: the first report is kept, a different later one marks the stage
        as varied. An unreported call changes nothing."""
        if settings is None:
            return self
        current = getattr(self, stage)
        if current is None:
            return replace(self, **{stage: settings})
        if current != settings and stage not in self.varied:
            return replace(self, varied=(*self.varied, stage))
        return self


#: (dotted field of a requested protocol, dotted field of an executed one) compared on a row.
EXECUTED_FIELDS: tuple[tuple[str, str], ...] = (
    ("caption_prompt", "caption.prompt"),
    ("caption.do_sample", "caption.do_sample"),
    ("caption.temperature", "caption.temperature"),
    ("caption.max_new_tokens", "caption.max_new_tokens"),
    ("generation.width", "generation.width"),
    ("generation.height", "generation.height"),
    ("generation.num_inference_steps", "generation.num_inference_steps"),
    ("generation.guidance_scale", "generation.guidance_scale"),
)


@dataclass(frozen=True)
class Deviation:
    """One protocol field where what ran differs from what was asked (or was not reported)."""

    field: str
    expected: Any
    executed: Any  # None when the adapter did not report it
    reported: bool = True

    def describe(self) -> str:
        if not self.reported:
            return f"{self.field}: not reported by the adapter (protocol: {_short(self.expected)})"
        return f"{self.field}: ran {_short(self.executed)} (protocol: {_short(self.expected)})"


def protocol_deviations(expected: dict[str, Any], executed: dict[str, Any] | None) -> list[Deviation]:
    """Every field of ``EXECUTED_FIELDS`` where ``executed`` (an ``ExecutedProtocol`` dict)
    differs from ``expected`` (a ``Protocol`` dict) or is unreported."""
    executed = executed or {}
    out: list[Deviation] = []
    for stage in executed.get("varied") or ():
        out.append(Deviation(f"{stage} settings", "one setting for every call", "changed between calls"))
    for want_path, got_path in EXECUTED_FIELDS:
        want = _lookup(expected, want_path)
        if want is None:  # the track does not constrain this field
            continue
        got = _lookup(executed, got_path)
        if got is None:
            out.append(Deviation(got_path, want, None, reported=False))
        elif not _same(want, got):
            out.append(Deviation(got_path, want, got))
    return out


def _lookup(tree: Any, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str):
        # whitespace runs differ between copies of the instruction; the words must match
        return isinstance(actual, str) and " ".join(expected.split()) == " ".join(actual.split())
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(float(expected), float(actual), rel_tol=1e-9, abs_tol=1e-12)
    return expected == actual


def as_executed(protocol: dict[str, Any]) -> dict[str, Any]:
    """A protocol in the requested form (``Protocol.to_dict``) in the executed form, for a
    source that states the settings it ran with (a reported entry)."""
    caption = dict(protocol.get("caption") or {})
    if "caption_prompt" in protocol:
        caption["prompt"] = protocol["caption_prompt"]
    return {"caption": caption or None, "generation": dict(protocol.get("generation") or {}) or None, "varied": []}


def _short(value: Any, limit: int = 60) -> str:
    if value == "":
        return "(no instruction)"
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
