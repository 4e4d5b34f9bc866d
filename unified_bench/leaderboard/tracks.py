"""The leaderboard's tracks, which runs belong to them, and protocol checks.

A run belongs to a track by the metrics it has and by its dataset (``run.dataset.name``):
Shapes runs are those on the Shapes dataset (or scored with the Shapes oracle); every other
run may sit on the Unified-Bench tracks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unified_bench.metrics import EXTENDED_METRICS, PAPER_METRICS

SHAPES_METRICS: tuple[str, ...] = ("effnet", "ssim", "shapes-attr")
SHAPES_ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "position", "count")
SHAPES_SUB_SCORES: tuple[str, ...] = tuple(f"shapes-attr.{a}" for a in SHAPES_ATTRIBUTES)


def _paper_protocol() -> dict[str, Any]:
    """The paper protocol as a plain dict: the runner's definition when it is installed."""
    try:
        from unified_bench.runner.protocol import PAPER_PROTOCOL
    except ImportError:  # the runner is optional for building a site; same values, kept here
        return dict(_FALLBACK_PROTOCOL)
    return PAPER_PROTOCOL.to_dict()


#: Same values as ``unified_bench.runner.protocol.PAPER_PROTOCOL`` (official demo.py of the
#: UAE release), used only when the runner module cannot be imported.
_FALLBACK_PROTOCOL: dict[str, Any] = {
    "caption_prompt": (
        "You are an expert vision-language model.  \n"
        "Your task is: Given an input image, generate a **textual description** of the image. "
        'If there is text in the image, transcribe it inside double quotes "".  \n'
        "Now, carefully analyze the input image and output the full description. "
    ),
    "caption": {"do_sample": True, "temperature": 0.7, "max_new_tokens": 512},
    "generation": {"width": 1024, "height": 1024, "num_inference_steps": 40, "guidance_scale": 5.0},
    "name": "uae-paper",
}

#: The protocol fields a row is checked against (dotted paths into ``run.protocol``).
PROTOCOL_FIELDS: tuple[str, ...] = (
    "caption_prompt",
    "caption.do_sample",
    "caption.temperature",
    "caption.max_new_tokens",
    "generation.width",
    "generation.height",
    "generation.num_inference_steps",
    "generation.guidance_scale",
)


@dataclass(frozen=True)
class Column:
    """One score column of a track table: a metric or a sub-score of one."""

    key: str  # "clip" or "shapes-attr.color"
    label: str
    sub_score: bool = False


@dataclass(frozen=True)
class Track:
    slug: str
    title: str
    description: str
    metrics: tuple[str, ...]
    #: results.json key of the composite score, or None when the score is one metric's mean
    score_key: str | None
    score_metric: str | None
    score_label: str
    sub_scores: tuple[str, ...] = ()
    shapes: bool = False
    #: the dataset the track ranks on (``run.dataset.name``; Shapes accepts any "shapes*" name)
    dataset: str = "official"

    @property
    def columns(self) -> list[Column]:
        cols = [Column(m, m) for m in self.metrics]
        cols += [Column(s, s, sub_score=True) for s in self.sub_scores]
        return cols

    def protocol(self) -> dict[str, Any]:
        return _paper_protocol()


TRACKS: tuple[Track, ...] = (
    Track(
        "unified-bench",
        "Unified-Bench",
        "The paper's track: cosine similarity of original and reconstruction under CLIP, DINOv2, "
        "DINOv3 and LongCLIP; the unified score is the mean of the four means (x100).",
        PAPER_METRICS,
        "unified_score",
        None,
        "unified score",
    ),
    Track(
        "unified-bench-extended",
        "Unified-Bench extended",
        "The paper's four backbones plus SigLIP; the extended score is the mean of the five means (x100).",
        EXTENDED_METRICS,
        "extended_score",
        None,
        "extended score",
    ),
    Track(
        "shapes",
        "Shapes",
        "Synthetic scenes with known objects: EfficientNet-Lite and SSIM similarity, and the Shapes "
        "oracle's object-level F1 with per-attribute sub-scores; the track score is the oracle F1 (x100).",
        SHAPES_METRICS,
        None,
        "shapes-attr",
        "shapes-attr F1",
        SHAPES_SUB_SCORES,
        shapes=True,
        dataset="shapes",
    ),
)


def get_track(slug: str) -> Track:
    for track in TRACKS:
        if track.slug == slug:
            return track
    raise KeyError(slug)


def dataset_name(run: Mapping[str, Any]) -> str | None:
    dataset = run.get("dataset")
    if isinstance(dataset, Mapping) and isinstance(dataset.get("name"), str):
        return dataset["name"]
    return None


def is_shapes_run(run: Mapping[str, Any], metrics: set[str]) -> bool:
    name = dataset_name(run)
    if name is not None:
        return name.lower().startswith("shapes")
    return "shapes-attr" in metrics


def tracks_for(run: Mapping[str, Any], metrics: set[str]) -> list[Track]:
    """The tracks a run sits on, given the metrics that produced at least one score."""
    shapes = is_shapes_run(run, metrics)
    out = []
    for track in TRACKS:
        if track.shapes != shapes:
            continue
        defining = set(track.metrics) - (set(PAPER_METRICS) if track.slug == "unified-bench-extended" else set())
        if metrics & defining:
            out.append(track)
    return out


# ---- protocol comparison -------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolCheck:
    """How a row's protocol relates to its track's: ``status`` is match, differs or unknown."""

    status: str
    differences: tuple[str, ...] = ()
    unrecorded: tuple[str, ...] = ()


def _lookup(data: Any, dotted: str) -> tuple[bool, Any]:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str):
        # whitespace runs differ between copies of the instruction; the words must match
        return isinstance(actual, str) and " ".join(expected.split()) == " ".join(actual.split())
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(float(expected), float(actual), rel_tol=1e-9, abs_tol=1e-12)
    return expected == actual


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_protocol(protocol: Any, reference: Mapping[str, Any]) -> ProtocolCheck:
    """Compare a run's recorded protocol with the track's, field by field."""
    if not isinstance(protocol, Mapping) or not protocol:
        return ProtocolCheck("unknown", unrecorded=("protocol",))
    differences, unrecorded = [], []
    for dotted in PROTOCOL_FIELDS:
        has_expected, expected = _lookup(reference, dotted)
        if not has_expected:
            continue
        present, actual = _lookup(protocol, dotted)
        if not present:
            unrecorded.append(dotted)
        elif not _same(expected, actual):
            differences.append(f"{dotted}: {_short(actual)} (track: {_short(expected)})")
    if differences:
        return ProtocolCheck("differs", tuple(differences), tuple(unrecorded))
    if unrecorded:
        return ProtocolCheck("unknown", (), tuple(unrecorded))
    return ProtocolCheck("match")


def check_run(run: Mapping[str, Any], track: Track) -> ProtocolCheck:
    """The protocol check plus the dataset: a run on other images is flagged too."""
    check = check_protocol(run.get("protocol"), track.protocol())
    name = dataset_name(run)
    differences, unrecorded = list(check.differences), list(check.unrecorded)
    if name is None:
        unrecorded.append("dataset")
    elif not (name == track.dataset or (track.shapes and name.lower().startswith("shapes"))):
        differences.append(f"dataset: {_short(name)} (track: {track.dataset})")
    if differences:
        return ProtocolCheck("differs", tuple(differences), tuple(unrecorded))
    if unrecorded:
        return ProtocolCheck("unknown", (), tuple(unrecorded))
    return ProtocolCheck("match")


def protocol_summary(protocol: Any) -> str:
    """One line: instruction kind and generation settings, for the table cell."""
    if not isinstance(protocol, Mapping):
        return "not recorded"
    parts = []
    name = protocol.get("name")
    if isinstance(name, str):
        parts.append(name)
    found, temperature = _lookup(protocol, "caption.temperature")
    if found:
        parts.append(f"T={_short(temperature, 12)}")
    found, tokens = _lookup(protocol, "caption.max_new_tokens")
    if found:
        parts.append(f"{_short(tokens, 12)} tok")
    has_w, width = _lookup(protocol, "generation.width")
    has_h, height = _lookup(protocol, "generation.height")
    if has_w and has_h:
        parts.append(f"{_short(width, 8)}x{_short(height, 8)}")
    found, steps = _lookup(protocol, "generation.num_inference_steps")
    if found:
        parts.append(f"{_short(steps, 8)} steps")
    found, cfg = _lookup(protocol, "generation.guidance_scale")
    if found:
        parts.append(f"CFG {_short(cfg, 8)}")
    return ", ".join(parts) if parts else "recorded (see run record)"
