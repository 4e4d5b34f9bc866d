"""Metric sanity report: do the metrics rank degraded copies the way a person would?

For each real photo (``unified_bench.datasets.photos``) we make graded degradations (JPEG
quality, Gaussian blur, Gaussian noise, centre crop resized back) and score every copy
against the original, together with every *other* photo as an unrelated "reconstruction".
It is one ordinary run: ``run_eval`` of the ``degrade`` test-double adapter (whose
reconstruction of a sample is its degraded copy, or the other photo) on the derived
``photos-sanity`` dataset (one sample per copy and per unrelated pair), scored once by the
scoring engine. Two properties are checked per metric:

- **monotonic**: within a family, similarity never rises as the degradation gets stronger;
- **separation**: every degraded copy of a photo scores above every unrelated photo.

Both are reported as counts of photos for which they hold. They are not thresholds: the
report shows what each metric does and does not see (e.g. pixel metrics under crops).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from rich.console import Console
from rich.table import Table

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.core.errors import ConfigError, DatasetError
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration
from unified_bench.datasets.base import EvalDataset, Sample
from unified_bench.datasets.photos import Photo, photo_set, png_bytes
from unified_bench.results.io import atomic_write_text
from unified_bench.runner.store import IMAGES_DIR, REFS_DIR, RUN_FILE, RunStore

DEFAULT_METRICS: tuple[str, ...] = ("effnet", "ssim", "psnr")

#: Degradation families, weakest first. Units: JPEG quality; blur radius (px); noise sigma
#: (8-bit levels); crop = fraction of width and height kept around the centre.
DEFAULT_LEVELS: Mapping[str, tuple[float, ...]] = {
    "jpeg": (90, 70, 50, 30, 10),
    "blur": (1, 2, 4, 8),
    "noise": (5, 15, 30, 60),
    "crop": (0.90, 0.75, 0.60, 0.45),
}

#: Photos are scored at this size (long side, px): the metrics resize anyway (effnet to
#: 224 px) and pixel metrics at full retina size would dominate the run time.
DEFAULT_MAX_SIDE = 512

#: Ties count as "not rising": equal scores keep a sequence monotonic.
TIE_TOLERANCE = 1e-9


# ---------------------------------------------------------------- degradations (pure)


@dataclass(frozen=True)
class Degradation:
    family: str
    level: float

    @property
    def label(self) -> str:
        if self.family == "jpeg":
            return f"jpeg_q{int(self.level)}"
        if self.family == "crop":
            return f"crop_{round(self.level * 100)}"
        return f"{self.family}_{self.level:g}"


def degradations(levels: Mapping[str, Sequence[float]] = DEFAULT_LEVELS) -> list[Degradation]:
    unknown = set(levels) - set(DEFAULT_LEVELS)
    if unknown:
        raise ValueError(f"unknown degradation families {sorted(unknown)}; known: {list(DEFAULT_LEVELS)}")
    return [Degradation(family, float(level)) for family, values in levels.items() for level in values]


def noise_seed(photo_id: str, label: str) -> int:
    """Seed from names only, so a copy is the same whatever else is in the run."""
    return int.from_bytes(hashlib.sha256(f"{photo_id}:{label}".encode()).digest()[:8], "little")


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def gaussian_blur(image: Image.Image, radius: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius))


def gaussian_noise(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    noisy = pixels + np.random.default_rng(seed).normal(0.0, sigma, size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def centre_crop(image: Image.Image, keep: float) -> Image.Image:
    """Keep the central ``keep`` fraction of each side, then resize back to the full size."""
    width, height = image.size
    crop_w, crop_h = max(1, round(width * keep)), max(1, round(height * keep))
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BICUBIC)


def degrade(image: Image.Image, degradation: Degradation, photo_id: str) -> Image.Image:
    """The degraded copy of ``image`` (a JPEG copy is the decoded JPEG file)."""
    if degradation.family == "jpeg":
        with Image.open(io.BytesIO(jpeg_bytes(image, int(degradation.level)))) as decoded:
            return decoded.convert("RGB")
    if degradation.family == "blur":
        return gaussian_blur(image, degradation.level)
    if degradation.family == "noise":
        return gaussian_noise(image, degradation.level, noise_seed(photo_id, degradation.label))
    return centre_crop(image, degradation.level)


def working_copy(image: Image.Image, max_side: int | None) -> Image.Image:
    if not max_side or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


# ---------------------------------------------------------------- properties (pure)


def is_monotonic(scores: Sequence[float | None]) -> bool:
    """True when no score rises as strength grows (None = not scored = does not hold)."""
    if any(s is None or not math.isfinite(s) for s in scores):
        return False
    return all(later <= earlier + TIE_TOLERANCE for earlier, later in zip(scores, scores[1:]))


def separates(degraded: Sequence[float | None], unrelated: Sequence[float | None]) -> bool:
    """True when every degraded copy scores strictly above every unrelated photo."""
    values = list(degraded) + list(unrelated)
    if not unrelated or any(v is None or not math.isfinite(v) for v in values):
        return False
    return min(degraded) > max(unrelated)


# ---------------------------------------------------------------- report


@dataclass
class PropertyCount:
    holds: int
    photos: int
    failures: list[dict[str, Any]] = field(default_factory=list)

    def text(self) -> str:
        return f"{self.holds}/{self.photos}"


@dataclass
class MetricSanity:
    metric: str
    unit: str
    monotonic: dict[str, PropertyCount]
    separation: PropertyCount
    separation_by_level: dict[str, PropertyCount]
    mean_by_level: dict[str, float | None]
    mean_unrelated: float | None
    max_unrelated: float | None


@dataclass
class SanityReport:
    photos: list[str]
    max_side: int | None
    levels: dict[str, list[float]]
    metrics: list[MetricSanity]
    failed_metrics: list[dict[str, str]]
    errors: list[dict[str, Any]]
    timings: dict[str, float]
    engine_results: str

    def metric(self, name: str) -> MetricSanity:
        for entry in self.metrics:
            if entry.metric == name:
                return entry
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def analyse(
    scores: Mapping[str, float | None],
    photo_ids: Sequence[str],
    levels: Mapping[str, Sequence[float]],
    metric: str,
    unit: str,
) -> MetricSanity:
    """Turn one metric's per-pair scores (keyed by sample id) into the two properties."""
    copies = degradations(levels)
    monotonic: dict[str, PropertyCount] = {}
    for family, values in levels.items():
        count = PropertyCount(0, len(photo_ids))
        for pid in photo_ids:
            seq = [scores.get(degraded_id(pid, Degradation(family, float(v)))) for v in values]
            if is_monotonic(seq):
                count.holds += 1
            else:
                count.failures.append({"photo": pid, "scores": dict(zip((Degradation(family, float(v)).label for v in values), seq))})
        monotonic[family] = count

    separation = PropertyCount(0, len(photo_ids))
    by_level = {d.label: PropertyCount(0, len(photo_ids)) for d in copies}
    unrelated_all: list[float] = []
    for pid in photo_ids:
        unrelated = {other: scores.get(unrelated_id(pid, other)) for other in photo_ids if other != pid}
        unrelated_all += [v for v in unrelated.values() if v is not None]
        degraded = {d.label: scores.get(degraded_id(pid, d)) for d in copies}
        if separates(list(degraded.values()), list(unrelated.values())):
            separation.holds += 1
        else:
            worst_copy = min(degraded, key=lambda k: -math.inf if degraded[k] is None else degraded[k])
            closest = max(unrelated, key=lambda k: math.inf if unrelated[k] is None else unrelated[k]) if unrelated else None
            separation.failures.append(
                {
                    "photo": pid,
                    "weakest_copy": worst_copy,
                    "weakest_copy_score": degraded[worst_copy],
                    "closest_unrelated": closest,
                    "closest_unrelated_score": unrelated.get(closest) if closest else None,
                }
            )
        for label, value in degraded.items():
            if separates([value], list(unrelated.values())):
                by_level[label].holds += 1
            else:
                by_level[label].failures.append({"photo": pid, "score": value})

    def mean(values: Sequence[float | None]) -> float | None:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(finite)) if finite else None

    return MetricSanity(
        metric=metric,
        unit=unit,
        monotonic=monotonic,
        separation=separation,
        separation_by_level=by_level,
        mean_by_level={d.label: mean([scores.get(degraded_id(pid, d)) for pid in photo_ids]) for d in copies},
        mean_unrelated=mean(unrelated_all),
        max_unrelated=max(unrelated_all) if unrelated_all else None,
    )


# ---------------------------------------------------------------- the dataset and the adapter

#: The derived dataset (registered as ``photos-sanity``) and the adapter that "reconstructs" it.
DATASET_NAME = "photos-sanity"
ADAPTER_NAME = "degrade"


def format_levels(levels: Mapping[str, Sequence[float]]) -> str:
    """``{"jpeg": (90, 10), "crop": (0.9,)}`` -> ``"jpeg=90,10;crop=0.9"`` (exact: parses back)."""

    def number(value: float) -> str:
        short = f"{float(value):g}"
        return short if float(short) == float(value) else repr(float(value))

    return ";".join(f"{family}=" + ",".join(number(v) for v in values) for family, values in levels.items())


def parse_levels(text: str) -> dict[str, tuple[float, ...]]:
    """The inverse of :func:`format_levels` (families checked by :func:`degradations`)."""
    levels: dict[str, tuple[float, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        family, sep, values = part.partition("=")
        try:
            if not sep:
                raise ValueError
            levels[family.strip()] = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"degradation levels: expected 'family=level,level;...', got {part!r}") from None
    try:
        degradations(levels)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return levels


def degraded_id(photo_id: str, degradation: Degradation) -> str:
    return f"{photo_id}__{degradation.label}"


def unrelated_id(photo_id: str, other: str) -> str:
    return f"{photo_id}__vs__{other}"


def load_sanity_dataset(options: Mapping[str, str], cache_dir: Path | None = None) -> EvalDataset:
    """``photos-sanity``: for every photo, one sample per degraded copy, then one sample per
    *other* photo (its unrelated "reconstruction"). Every sample's reference is the photo's
    working copy; the ``degrade`` adapter makes the reconstruction. Degraded samples come
    first, so the adapter has seen every photo before an unrelated sample asks for it.

    Options: ``photos`` (comma-separated ids; default all), ``max_side`` (px or ``native``),
    ``levels`` (:func:`format_levels`; default :data:`DEFAULT_LEVELS`).
    """
    ids = [p.strip() for p in options.get("photos", "").split(",") if p.strip()] or None
    photos = photo_set(ids)
    if len(photos) < 2:
        raise DatasetError("the sanity dataset needs at least two photos (one is the other's unrelated image)")
    max_side = _max_side(options.get("max_side", str(DEFAULT_MAX_SIDE)))
    levels = parse_levels(options["levels"]) if "levels" in options else dict(DEFAULT_LEVELS)
    references = {photo.id: _WorkingCopy(photo, max_side) for photo in photos}
    samples = [Sample(degraded_id(p.id, d), image=references[p.id]) for p in photos for d in degradations(levels)]
    samples += [Sample(unrelated_id(p.id, o.id), image=references[p.id]) for p in photos for o in photos if o.id != p.id]
    return EvalDataset(
        DATASET_NAME,
        samples,
        DEFAULT_METRICS,
        "graded degradations of real photos and unrelated photo pairs (metric sanity report)",
        {"kind": DATASET_NAME, "photos": [p.id for p in photos], "max_side": max_side, "levels": format_levels(levels)},
    )


def _max_side(text: str) -> int | None:
    if str(text).strip().lower() in ("", "none", "native"):
        return None
    try:
        return int(text)
    except ValueError:
        raise DatasetError(f"--data-arg max_side expects an integer or 'native', got {text!r}") from None


class _WorkingCopy:
    """A photo's working copy as PNG bytes, made on first use and shared by its samples (so the
    references of one photo are byte-identical files and are embedded once)."""

    def __init__(self, photo: Photo, max_side: int | None) -> None:
        self.photo, self.max_side = photo, max_side
        self._png: bytes | None = None

    def __call__(self) -> bytes:
        if self._png is None:
            self._png = png_bytes(working_copy(self.photo.load(), self.max_side))
        return self._png


@dataclass
class DegradeConfig:
    levels: str = field(
        default=format_levels(DEFAULT_LEVELS),
        metadata={"help": "the degradations it may be asked for, 'family=level,level;...' (as the dataset's levels)"},
    )


class DegradeAdapter(Adapter):
    """Test double for the sanity report: the "reconstruction" of sample ``<photo>__<label>`` is
    a controlled degradation of its input image, and that of ``<photo>__vs__<other>`` is the
    other photo (as this adapter saw it when captioning one of that photo's samples).

    ``caption`` remembers each input image by sample id (and by photo id); ``generate`` makes
    the copy. It uses no instruction, no sampling and ignores the requested size (a copy has
    its input's size).
    """

    name = ADAPTER_NAME
    config_class = DegradeConfig
    capabilities = Capabilities(max_batch_size=32, native_resolution=None, deterministic=True)

    def __init__(self, config: DegradeConfig | None = None) -> None:
        self.config = config or DegradeConfig()
        self.by_label = {d.label: d for d in degradations(parse_levels(self.config.levels))}
        self.inputs: dict[str, Image.Image] = {}  # sample id -> input, until generated
        self.photos: dict[str, Image.Image] = {}  # photo id -> its image

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        if sample_ids is None:
            raise ValueError("degrade: needs sample_ids (it reconstructs by sample id)")
        captions = []
        for image, sample_id in zip(images, sample_ids):
            photo, target = self._parse(sample_id)
            self.inputs[sample_id] = self.photos[photo] = image
            captions.append(f"{photo}: {target.label}" if isinstance(target, Degradation) else f"{photo}: unrelated photo {target}")
        return captions

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        if sample_ids is None:
            raise ValueError("degrade: needs sample_ids (it reconstructs by sample id)")
        out = []
        for sample_id in sample_ids:
            photo, target = self._parse(sample_id)
            image = self.inputs.pop(sample_id, None)
            if image is None:
                raise ValueError(f"degrade: sample {sample_id} was not captioned first")
            if isinstance(target, Degradation):
                out.append(degrade(image, target, photo))
            elif target in self.photos:
                out.append(self.photos[target])
            else:
                raise ValueError(f"degrade: {sample_id} asks for photo {target}, which this adapter has not captioned yet")
        return out

    def _parse(self, sample_id: str) -> tuple[str, Degradation | str]:
        photo, sep, other = sample_id.partition("__vs__")
        if sep:
            return photo, other
        photo, sep, label = sample_id.rpartition("__")
        if not sep or label not in self.by_label:
            raise ValueError(f"degrade: {sample_id!r} is neither <photo>__<degradation> (of {self.config.levels}) nor <photo>__vs__<photo>")
        return photo, self.by_label[label]

    def caption_settings(self, prompt: str) -> ExecutedCaption:
        # the caption names the copy to make: no instruction, no sampling, no token budget
        return ExecutedCaption(prompt="", do_sample=False, temperature=0.0, max_new_tokens=0, extra={"captioner": "none (names the degradation)"})

    def generation_settings(self, size: tuple[int, int] | None) -> ExecutedGeneration:
        # the copy keeps its input's size, whatever size is asked for
        return ExecutedGeneration(None, None, 0, 0.0, scheduler="none (degraded copy of the input)", dtype="uint8", extra={"size": "the input's"})

    def describe(self) -> dict[str, Any]:
        return {"kind": ADAPTER_NAME, "levels": self.config.levels}

    def close(self) -> None:
        self.inputs.clear()
        self.photos.clear()


# ---------------------------------------------------------------- the run


def run_sanity(
    out_dir: str | Path,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    photos: Sequence[Photo] | None = None,
    levels: Mapping[str, Sequence[float]] = DEFAULT_LEVELS,
    max_side: int | None = DEFAULT_MAX_SIDE,
    batch_size: int | None = None,
    device: str = "cpu",
    checkpoints: Mapping[str, str] | None = None,
    keep_images: bool = False,
    progress: bool = True,
    console: Console | None = None,
) -> SanityReport:
    """One ``run_eval`` of the ``degrade`` adapter on the ``photos-sanity`` dataset into
    ``OUT/run`` (one round trip, one scoring pass), then sanity.json and sanity.md.

    Each call starts that run afresh. Without ``keep_images`` the run's images/ and refs/
    are removed once scored (results.json, scores.csv and captions.jsonl stay).
    """
    from unified_bench.runner.eval import EvalConfig, run_eval
    from unified_bench.scoring import ScoringConfig

    started = time.perf_counter()
    out_dir = Path(out_dir)
    photos = list(photos or photo_set())
    if len(photos) < 2:
        raise ValueError("the sanity report needs at least two photos (one is the other's unrelated image)")
    degradations(levels)  # unknown families fail here, before anything is written
    run_dir = out_dir / RUN_DIR
    _clear_previous(run_dir)
    level_text = format_levels(levels)
    config = EvalConfig(
        model=ADAPTER_NAME,
        model_args={"levels": level_text},
        data=DATASET_NAME,
        data_args={"photos": ",".join(p.id for p in photos), "max_side": str(max_side or "native"), "levels": level_text},
        out=run_dir,
        metrics=list(metrics),
        batch_size=DegradeAdapter.capabilities.max_batch_size,
        scoring=ScoringConfig(
            metrics=(),
            checkpoints=dict(checkpoints or {}),
            device=device,
            batch_size=batch_size,
            use_cache=False,  # the copies are throwaway files; each reference is embedded once anyway
        ),
        progress=progress,
        durable=False,  # throwaway copies, remade by every call
        command="unified-bench sanity",
    )
    outcome = run_eval(config, console=console)
    assert outcome.score is not None  # run_eval scores a single-process run
    if not keep_images:
        for folder in (IMAGES_DIR, REFS_DIR):
            shutil.rmtree(run_dir / folder, ignore_errors=True)
    ids = [p.id for p in photos]
    results = outcome.score.results
    entries = [
        analyse(results["similarities_by_model"][m.name], ids, levels, m.name, m.unit) for m in outcome.score.report.metrics
    ]
    round_trip = outcome.timings.get("runner.total_s", 0.0)
    total = time.perf_counter() - started
    report = SanityReport(
        photos=ids,
        max_side=max_side,
        levels={family: [float(v) for v in values] for family, values in levels.items()},
        metrics=entries,
        failed_metrics=[{"metric": f.metric, "message": f.message} for f in outcome.score.failures],
        errors=results["errors"],
        timings={"prepare_s": round_trip, "score_s": total - round_trip, "total_s": total},
        engine_results=f"{RUN_DIR}/results.json",
    )
    atomic_write_text(out_dir / "sanity.json", json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(out_dir / "sanity.md", render_markdown(report))
    return report


#: The run directory inside the report's folder.
RUN_DIR = "run"


def _clear_previous(run_dir: Path) -> None:
    """Remove the run an earlier sanity report left in ``run_dir``; refuse anything else."""
    if not run_dir.exists():
        return
    info = RunStore(run_dir).read_run_info() if (run_dir / RUN_FILE).exists() else None
    if info is None or info.model != ADAPTER_NAME or info.dataset != DATASET_NAME:
        raise ConfigError(f"{run_dir} exists and is not a sanity-report run; choose another --out")
    shutil.rmtree(run_dir)


# ---------------------------------------------------------------- presentation


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if unit.lower() == "db" else f"{value:.3f}"


def summary_rows(report: SanityReport) -> tuple[list[str], list[list[str]]]:
    families = list(report.levels)
    header = ["metric", *[f"monotonic {f}" for f in families], "all copies > all unrelated"]
    jpeg50 = "jpeg_q50"
    if report.metrics and jpeg50 in report.metrics[0].separation_by_level:
        header.append("JPEG-50 > all unrelated")
    header.append("mean unrelated")
    rows = []
    for entry in report.metrics:
        row = [entry.metric, *[entry.monotonic[f].text() for f in families], entry.separation.text()]
        if jpeg50 in entry.separation_by_level:
            row.append(entry.separation_by_level[jpeg50].text())
        row.append(_fmt(entry.mean_unrelated, entry.unit))
        rows.append(row)
    return header, rows


def print_report(report: SanityReport, console: Console | None = None) -> None:
    console = console or Console()
    header, rows = summary_rows(report)
    short = {f"monotonic {f}": f"{f} falls" for f in report.levels}
    short.update({"all copies > all unrelated": "copies > others", "JPEG-50 > all unrelated": "JPEG-50 > others", "mean unrelated": "others mean"})
    table = Table(
        title=f"metric sanity on {len(report.photos)} photos",
        caption="counts = photos where the property holds; 'others' = every other photo of the set",
    )
    for name in header:
        table.add_column(short.get(name, name), justify="left" if name == "metric" else "right", no_wrap=name == "metric")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for failure in report.failed_metrics:
        console.print(f"[red]metric {failure['metric']} did not run:[/] {failure['message']}")


def render_markdown(report: SanityReport) -> str:
    header, rows = summary_rows(report)
    lines = [
        "# Metric sanity report",
        "",
        f"Photos ({len(report.photos)}): {', '.join(report.photos)}; scored at long side "
        f"{report.max_side or 'native'} px.",
        "Degradations (weakest first): "
        + "; ".join(f"{family} {', '.join(f'{v:g}' for v in values)}" for family, values in report.levels.items())
        + ".",
        "",
        "Counts are photos for which the property holds. *Monotonic*: similarity never rises as a",
        "degradation gets stronger. *All copies > all unrelated*: every degraded copy of a photo",
        "scores above every other photo of the set.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
        "## Mean score by degradation",
        "",
    ]
    if report.metrics:
        labels = list(report.metrics[0].mean_by_level)
        lines += ["| degradation | " + " | ".join(m.metric for m in report.metrics) + " |", "|" + "---|" * (len(report.metrics) + 1)]
        for label in labels:
            lines.append(f"| {label} | " + " | ".join(_fmt(m.mean_by_level[label], m.unit) for m in report.metrics) + " |")
        lines.append("| unrelated photos | " + " | ".join(_fmt(m.mean_unrelated, m.unit) for m in report.metrics) + " |")
        lines += ["", "## Where a property fails", ""]
        any_failure = False
        for entry in report.metrics:
            for family, count in entry.monotonic.items():
                for failure in count.failures:
                    any_failure = True
                    seq = ", ".join(f"{k} {_fmt(v, entry.unit)}" for k, v in failure["scores"].items())
                    lines.append(f"- {entry.metric}, {family}, {failure['photo']}: not monotonic ({seq})")
            for failure in entry.separation.failures:
                any_failure = True
                lines.append(
                    f"- {entry.metric}, {failure['photo']}: copy {failure['weakest_copy']} "
                    f"({_fmt(failure['weakest_copy_score'], entry.unit)}) <= unrelated {failure['closest_unrelated']} "
                    f"({_fmt(failure['closest_unrelated_score'], entry.unit)})"
                )
        if not any_failure:
            lines.append("None.")
    for failure in report.failed_metrics:
        lines += ["", f"Metric {failure['metric']} did not run: {failure['message']}"]
    lines += ["", f"Per-pair scores: `{report.engine_results}`. Time: {report.timings['total_s']:.1f} s.", ""]
    return "\n".join(lines)
