"""What every evaluation dataset hands the runner: samples with stable ids and references."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from unified_bench.core.errors import DatasetError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Sample:
    """One item to round-trip: a reference image (the image trip), a prompt (the text trip),
    or both (a Shapes scene has its render and its ground-truth caption).

    ``sample_id`` names the output file (``images/<id>.png``) and derives the seed, so it
    must be stable across runs. At most one of ``reference`` (a file) and ``image`` (in
    memory; the runner writes it to ``refs/<id>.<ext>`` and scores against that file) is set,
    and a sample has an image or a ``prompt`` or both. ``meta`` is ground truth for metrics
    that need it (e.g. a Shapes scene); it must be JSON-serialisable.

    ``problem`` marks a sample the dataset already knows cannot run (an empty prompt, a line
    that is not UTF-8): the message says what is wrong and where. The sample keeps its id and
    its place (``--limit``, shards and ids are as if it were good); the runner records the
    message as that sample's per-sample error (stage ``dataset``) and never hands it to the
    adapter, and the run goes on. Build such samples with :meth:`Sample.bad`.
    """

    sample_id: str
    reference: Path | None = None
    #: an image, or a zero-argument function returning an image or encoded file bytes
    #: (lazy, so large datasets are not held in memory)
    image: Image.Image | Callable[[], Image.Image | bytes] | None = field(default=None, compare=False, repr=False)
    meta: Mapping[str, Any] | None = None
    #: the text the text trip starts from (a prompt, or a scene's ground-truth caption)
    prompt: str | None = None
    #: why this sample cannot run, known when the dataset was read (None: a good sample)
    problem: str | None = None

    def __post_init__(self) -> None:
        if not self.sample_id or safe_sample_id(self.sample_id) != self.sample_id:
            raise ValueError(f"sample id {self.sample_id!r} is not a safe file name; use safe_sample_id()")
        if self.problem is not None:
            if not isinstance(self.problem, str) or not self.problem.strip():
                raise ValueError(f"sample {self.sample_id!r}: problem= must be a message saying what is wrong")
            return  # a known-bad sample needs nothing else: it is recorded, never run
        if self.reference is not None and self.image is not None:
            raise ValueError(f"sample {self.sample_id!r}: give one of reference= and image=, not both")
        if self.reference is None and self.image is None and self.prompt is None:
            raise ValueError(f"sample {self.sample_id!r}: give reference=, image= or prompt=")
        if self.prompt is not None and (not isinstance(self.prompt, str) or not self.prompt.strip()):
            # a dataset reading user text marks such a line with Sample.bad(); reaching this is its bug
            raise ValueError(f"sample {self.sample_id!r}: prompt= must be non-blank text; use Sample.bad() for a bad line")

    @classmethod
    def bad(cls, sample_id: str, problem: str, *, meta: Mapping[str, Any] | None = None) -> Sample:
        """A sample the dataset knows cannot run; the runner records ``problem`` as its error."""
        return cls(sample_id, meta=meta, problem=problem)


def encode_reference(sample: Sample) -> tuple[bytes, str]:
    """An in-memory reference as the file the runner writes for it: ``(bytes, suffix)``.

    An image is saved as PNG; encoded bytes are kept as given, with their format's suffix
    (``.bin`` when Pillow cannot tell, so loading reports it as unreadable). The SHA-256 of
    these bytes is the reference hash the run records.
    """
    from io import BytesIO

    from unified_bench.core.errors import ImageLoadError

    if sample.problem is not None:  # a known-bad sample reports why, whoever asks for its image
        raise DatasetError(sample.problem)
    data = sample.image() if callable(sample.image) else sample.image
    if isinstance(data, Image.Image):
        buffer = BytesIO()
        data.save(buffer, format="PNG")
        return buffer.getvalue(), ".png"
    if isinstance(data, (bytes, bytearray)):
        payload = bytes(data)
        try:
            with Image.open(BytesIO(payload)) as probe:
                return payload, "." + (probe.format or "png").lower().replace("jpeg", "jpg")
        except Exception:
            return payload, ".bin"
    if data is None and sample.prompt is not None:
        raise ImageLoadError(f"sample {sample.sample_id}: a prompt with no image, for the text trip only (--trip text)")
    raise ImageLoadError(f"sample {sample.sample_id}: dataset gave {type(data).__name__}, not an image")


@dataclass
class EvalDataset:
    """A named list of samples plus the metrics it is meant to be scored with."""

    name: str
    samples: list[Sample]
    default_metrics: tuple[str, ...]
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict)  # how it was loaded, for the run record

    def __len__(self) -> int:
        return len(self.samples)

    def limited(self, limit: int | None) -> EvalDataset:
        """The first ``limit`` samples in id order (the same subset whatever the sharding)."""
        if limit is None:
            return self
        if limit < 1:
            raise DatasetError("--limit must be >= 1")
        return EvalDataset(self.name, self.samples[:limit], self.default_metrics, self.description, self.source)


def safe_sample_id(text: str) -> str:
    """Make a file-name-safe id: runs of other characters become '_', no leading dot."""
    cleaned = _UNSAFE.sub("_", text).strip("_") or "sample"
    return "_" + cleaned if cleaned.startswith(".") else cleaned


def check_unique(samples: Sequence[Sample], where: str) -> list[Sample]:
    """Sort by id and refuse duplicate ids (two files would claim one output name)."""
    seen: dict[str, Sample] = {}
    dupes: list[str] = []
    for sample in samples:
        if sample.sample_id in seen:
            dupes.append(sample.sample_id)
        seen[sample.sample_id] = sample
    if dupes:
        shown = ", ".join(sorted(set(dupes))[:10])
        raise DatasetError(
            f"{where}: several images map to the same sample id ({shown}); rename them so that "
            "each file stem is unique"
        )
    return sorted(samples, key=lambda s: natural_key(s.sample_id))


def natural_key(text: str) -> tuple:
    """'2' sorts before '10' (the official set is named 0.jpg ... 99.jpg)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)
