"""The scoring engine: (reference, reconstruction) pairs -> ScoreReport.

Order of work, chosen for memory and repeated work:

1. the first metric's backbone loads; then every pair is decoded on a thread pool, in order
   (a bad file becomes a per-sample ``load`` error, never a crash). With the preprocessing
   pipeline (a GPU, by default) the first metric embeds the images already decoded while
   later files still decode; otherwise decoding finishes first. Decoded images stay in
   memory when they fit ``keep_decoded_pixels``, else are re-read;
2. for each metric in turn: load its backbone, embed references that are not in the on-disk
   cache, embed reconstructions, take cosines, free the backbone before the next one
   (peak memory ~ the largest single backbone);
3. a metric whose weights are missing is reported and skipped; the others still run.

Each key of ``ScoringConfig.metrics`` names a metric and the mode it reads
(:func:`unified_bench.scoring.keys.resolve_metric_key`): image mode is the order above; text
mode embeds (or parses) each sample's text and reference text, batched, texts shared by several
samples embedded once; image-text mode embeds each reconstruction and its reference text.
Texts never wait for images, and an image that fails to decode does not stop a text metric.
"""

from __future__ import annotations

import gc
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image
from rich.console import Console

from unified_bench.core.errors import ConfigError, ImageLoadError, UnifiedBenchError
from unified_bench.core.images import file_sha256, load_image
from unified_bench.metrics import (
    EmbeddingMetric,
    ImageTextMetric,
    Metric,
    PairInput,
    PairMetric,
    PairScore,
    TextEmbedder,
    TextInput,
    TokenCount,
    build_metric,
    get_spec,
)
from unified_bench.metrics.device_resize import PackedImages
from unified_bench.metrics.graph import FUSE_MIN_IMAGES
from unified_bench.core.progress import progress_bar
from unified_bench.results.model import MetricScores, SampleError, SampleRecord, ScoreReport
from unified_bench.scoring.cache import EmbeddingCache, default_cache_dir
from unified_bench.scoring.keys import TRIPS, resolve_metric_key
from unified_bench.scoring.pairing import Pair

R = TypeVar("R")
#: what a failed forward raises; the batch is retried item by item to isolate the bad one
_EMBED_ERRORS = (ImageLoadError, RuntimeError, ValueError)


def default_batch_size(device: str) -> int:
    """Images per forward when the user does not say: 64 on a GPU, where fewer, larger
    forwards cut launch overhead (benchmarks/scoring_throughput.py on an H100, ViT-B/16, 100
    pairs: 0.31 s at 16, 0.27 s at 32, 0.22-0.27 s at 64 and 128); 8 on a CPU, where a ViT-L/B
    forward is fastest per image at 4-8 (ViT-B/16 on this project's 2-core CPU: 221 ms per
    image at batch 8, 279 at batch 1, 241 at batch 16, as the activations outgrow the caches)."""
    return 64 if str(device).startswith("cuda") else 8


@dataclass
class ScoringConfig:
    #: metric keys: ``name`` or ``name@mode`` (see :func:`resolve_metric_key`); the key as given
    #: names the result
    metrics: Sequence[str]
    checkpoints: Mapping[str, str] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str | None = None
    #: images per backbone forward (None: :func:`default_batch_size` for the device)
    batch_size: int | None = None
    cache_dir: Path | None = None  # None -> default_cache_dir()
    use_cache: bool = True
    progress: bool = True
    #: keep decoded images in memory up to this many pixels (refs + recons), ~1.2 GB of RGB
    keep_decoded_pixels: int = 400_000_000
    #: threads for decoding and preprocessing (None: min(16, CPU count); on a 16-core GPU
    #: machine 200 PNG files decoded in 0.14-0.15 s on 8 threads, 0.12-0.135 s on 12 or 16)
    workers: int | None = None
    #: preprocess the next batch on worker threads while the backbone runs (None: on CUDA only;
    #: on a CPU the backbone's own threads already use every core, and preprocessing in line is
    #: within the noise: 51.3 s to score 200 ViT-B images vs 53.1 s of their bare forward, batch 8)
    prefetch: bool | None = None
    #: run traceable backbones through a fused oneDNN graph (unified_bench.metrics.graph)
    #: (None: on a CPU in float32 when a metric has at least FUSE_MIN_IMAGES images to embed)
    fuse: bool | None = None
    #: which preprocessing steps run on the metric's device, with the same arithmetic
    #: (EmbeddingMetric.preprocess_on_device): "none", "normalize" (threads stop at uint8
    #: pixels) or "resize" (threads only decode; the device resizes, crops and normalises)
    #: (None: "resize" on a GPU, where the threads' Pillow work is the bottleneck; "none" on a
    #: CPU, where it would only move work)
    device_preprocessing: str | None = None
    #: the trip scored ("image" or "text"): picks the mode of a key that names none
    trip: str = "image"

    def __post_init__(self) -> None:
        if self.trip not in TRIPS:
            raise ConfigError(f"trip must be one of {', '.join(TRIPS)}, got {self.trip!r}")
        if self.batch_size is None:
            self.batch_size = default_batch_size(self.device)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.device_preprocessing not in (None, "none", "normalize", "resize"):
            raise ConfigError(f"--device-preprocessing must be none, normalize or resize, got {self.device_preprocessing!r}")

    def overlaps(self) -> bool:
        return self.prefetch if self.prefetch is not None else str(self.device).startswith("cuda")

    def device_mode(self) -> str:
        """``device_preprocessing`` resolved for the device: none, normalize or resize."""
        if self.device_preprocessing is not None:
            return self.device_preprocessing
        return "none" if str(self.device).startswith("cpu") else "resize"

    def fuses(self, n_images: int) -> bool:
        """Whether to ask a metric for a fused graph when it has ``n_images`` to embed."""
        return self.fuse if self.fuse is not None else n_images >= FUSE_MIN_IMAGES


@dataclass
class MetricFailure:
    metric: str
    message: str


@dataclass
class _Sample:
    pair: Pair
    ref_hash: str | None = None
    recon_hash: str | None = None
    ref_image: Image.Image | None = None
    recon_image: Image.Image | None = None
    ok: bool = True


class _Images:
    """The samples' decoded images, decoded on a thread pool in sample order.

    ``start`` submits every sample; ``resolve(i)`` waits for samples up to ``i`` in order and
    records each outcome: a file that fails to decode becomes a ``load`` error and the sample
    is dropped from every metric. So the first metric can embed the first images while later
    ones still decode. Decoded images stay in memory up to ``budget`` pixels; past it they
    are re-read from disk when needed.
    """

    def __init__(self, samples: list[_Sample], pool: ThreadPoolExecutor, budget: int) -> None:
        self.samples = samples
        self.pool = pool
        self.budget = budget
        self.load_errors: list[SampleError] = []
        self._futures: list | None = None
        self._resolved = 0
        self._lock = threading.Lock()
        self.started = 0.0
        self.finished = 0.0  # when the last decode ended

    def start(self) -> None:
        if self._futures is None:
            self.started = time.perf_counter()
            self._futures = [self.pool.submit(_decode, sample) for sample in self.samples]

    def resolve(self, index: int) -> bool:
        """Wait for samples 0..index to decode; whether sample ``index`` is usable."""
        self.start()
        with self._lock:
            while self._resolved <= index:
                k = self._resolved
                outcome, ended = self._futures[k].result()
                self._futures[k] = None
                self.finished = max(self.finished, ended)
                sample = self.samples[k]
                if isinstance(outcome, SampleError):
                    self.load_errors.append(outcome)
                    sample.ok = False
                else:
                    ref, recon = outcome
                    pixels = sum(image.width * image.height for image in outcome if image is not None)
                    if pixels <= self.budget:
                        sample.ref_image, sample.recon_image = ref, recon
                        self.budget -= pixels
                self._resolved += 1
        return self.samples[index].ok

    def resolve_all(self) -> None:
        if self.samples:
            self.resolve(len(self.samples) - 1)
        else:
            self.start()

    def reference(self, sample: _Sample) -> Image.Image | None:
        if sample.pair.reference is None:
            return None
        return sample.ref_image if sample.ref_image is not None else load_image(sample.pair.reference)

    def reconstruction(self, sample: _Sample) -> Image.Image:
        return sample.recon_image if sample.recon_image is not None else load_image(sample.pair.reconstruction)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter), drawn lazily."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _workers(config: "ScoringConfig") -> int:
    return max(1, config.workers or min(16, os.cpu_count() or 1))


def _decode(sample: "_Sample") -> tuple[tuple[Image.Image | None, Image.Image | None] | SampleError, float]:
    """Decode and hash one pair's images (a path that is None stays None); a bad file becomes
    a per-sample ``load`` error. Also returns when it ended."""
    ref = recon = None
    try:
        # Decode first: load_image refuses pipes and directories, which hashing would
        # block on or fail at with a less helpful message.
        if sample.pair.reference is not None:
            ref = load_image(sample.pair.reference)
            sample.ref_hash = file_sha256(sample.pair.reference)
    except (ImageLoadError, OSError) as err:
        return SampleError(sample.pair.sample_id, "load", f"reference: {err}"), time.perf_counter()
    try:
        if sample.pair.reconstruction is not None:
            recon = load_image(sample.pair.reconstruction)
            sample.recon_hash = file_sha256(sample.pair.reconstruction)
    except (ImageLoadError, OSError) as err:
        return SampleError(sample.pair.sample_id, "load", f"reconstruction: {err}"), time.perf_counter()
    return (ref, recon), time.perf_counter()


class _Pipeline:
    """Preprocess batch k+1 on worker threads while the backbone runs batch k.

    Preprocessing (resize, crop, normalise) is per image, so splitting a batch across
    threads gives the same pixels as one call. When the metric resizes on its device
    (``preprocess_on_device``), preparing a batch is only packing the decoded images.
    """

    def __init__(self, metric: EmbeddingMetric, workers: int) -> None:
        self.metric = metric
        self.workers = workers
        # Page-locked batches let the copy to a GPU run without a staging copy.
        self.pin = metric.device.type == "cuda"
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.prefetch = ThreadPoolExecutor(max_workers=1)
        self.wait_s = 0.0  # time the backbone waited for preprocessing
        self.forward_s = 0.0

    def _prepare(self, images: list[Image.Image]) -> torch.Tensor | PackedImages:
        size = max(1, -(-len(images) // self.workers))
        chunks = [images[i : i + size] for i in range(0, len(images), size)]
        packs = self.metric.device_resize is not None and self.metric.device_resize.supports(images)
        if len(chunks) == 1 or packs:
            # Packing for a device resize is a copy per image: no need for the pool.
            pixels = self.metric.preprocess(images)
        else:
            pixels = torch.cat(list(self.pool.map(self.metric.preprocess, chunks)))
        return pixels.pin_memory() if self.pin else pixels

    def run(self, batches: Iterable[list[int]], pick) -> Iterator[tuple[list[int], torch.Tensor | Exception]]:
        """Yield (indices, embeddings) per batch, or (indices, exception) when it failed.

        ``batches`` is drawn on the prefetch thread, one batch ahead of the backbone, so it
        may be lazy (and wait for decoding)."""
        batches = iter(batches)

        def prepare_next() -> tuple[list[int] | None, Any]:
            batch = next(batches, None)
            if batch is None:
                return None, None
            try:
                return batch, self._prepare([pick(i) for i in batch])
            except (ImageLoadError, RuntimeError, ValueError) as err:
                return batch, err

        pending = self.prefetch.submit(prepare_next)
        while True:
            t0 = time.perf_counter()
            batch, pixels = pending.result()
            t1 = time.perf_counter()
            if batch is None:
                return
            pending = self.prefetch.submit(prepare_next)
            self.wait_s += t1 - t0
            if isinstance(pixels, Exception):
                yield batch, pixels
                continue
            try:
                embeddings = self.metric.embed_pixels(pixels)
            except (ImageLoadError, RuntimeError, ValueError) as err:
                yield batch, err
            else:
                yield batch, embeddings
            finally:
                self.forward_s += time.perf_counter() - t1

    def close(self) -> None:
        self.prefetch.shutdown(wait=True, cancel_futures=True)
        self.pool.shutdown(wait=True, cancel_futures=True)


def score(
    pairs: Sequence[Pair],
    config: ScoringConfig,
    *,
    console: Console | None = None,
) -> tuple[ScoreReport, list[MetricFailure], dict[str, float]]:
    """Score ``pairs`` with every metric of ``config``.

    Returns the report (run record left for the caller to fill), the metrics that could not
    be loaded, and wall-clock timings in seconds.
    """
    timings: dict[str, float] = {}
    errors: list[SampleError] = []  # the metrics' own; load errors come first in the report
    samples = [_Sample(pair) for pair in pairs]
    started = time.perf_counter()
    # Pillow releases the GIL while decoding, so threads decode files in parallel. Decoding
    # starts once the first backbone is loaded (so load time stays apart) and, on a GPU, runs
    # while that metric embeds the images already decoded.
    pool = ThreadPoolExecutor(max_workers=_workers(config))
    images = _Images(samples, pool, config.keep_decoded_pixels)
    cache_root = config.cache_dir or default_cache_dir()

    metric_scores: list[MetricScores] = []
    failures: list[MetricFailure] = []
    metric_infos: list[dict] = []
    try:
        with progress_bar(config.progress, console) as progress:
            for key in config.metrics:
                outcome = _run_metric(key, config, images, cache_root, errors, progress, timings)
                if isinstance(outcome, MetricFailure):
                    failures.append(outcome)
                else:
                    metric_scores.append(outcome[0])
                    metric_infos.append(outcome[1])
                if key != config.metrics[-1]:
                    # Free this backbone before the next loads (peak memory ~ the largest
                    # one). A full collection costs ~0.3 s, so the last metric skips it.
                    gc.collect()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
        images.resolve_all()  # every file is checked, even when no metric could run
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    timings["decode_s"] = images.finished - images.started if samples else 0.0
    timings["total_s"] = time.perf_counter() - started
    errors = [*images.load_errors, *errors]

    report = ScoreReport(
        samples=[
            SampleRecord(s.pair.sample_id, _path_text(s.pair.reference), _path_text(s.pair.reconstruction), s.ref_hash)
            for s in samples
        ],
        metrics=metric_scores,
        errors=errors,
        run={"metrics": metric_infos},
    )
    return report, failures, timings


def _path_text(path: Path | None) -> str:
    """A sample record's path; "" where the sample has no such image (as the runner writes)."""
    return "" if path is None else str(path)


def checkpoint_for(key: str, name: str, checkpoints: Mapping[str, str]) -> str | None:
    """The ``--checkpoint`` override for a key: given for the key, else for the metric, else
    for the metric whose checkpoint it shares (clip-text reads clip's); None: the default."""
    for candidate in (key, name, get_spec(name).checkpoint_of):
        if candidate is not None and candidate in checkpoints:
            return checkpoints[candidate]
    return None


def _run_metric(
    key: str,
    config: ScoringConfig,
    images: _Images,
    cache_root: Path,
    errors: list[SampleError],
    progress,
    timings: dict[str, float],
) -> tuple[MetricScores, dict] | MetricFailure:
    """Load the metric ``key`` names, score every live sample in its mode, release it."""
    t0 = time.perf_counter()
    try:
        name, mode = resolve_metric_key(key, config.trip)
        metric = build_metric(
            name, checkpoint=checkpoint_for(key, name, config.checkpoints), device=config.device, dtype=config.dtype
        )
    except UnifiedBenchError as err:
        return MetricFailure(key, str(err))
    finally:
        images.start()  # no-op after the first metric
    timings[f"{key}.load_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    task = progress.add_task(key, total=len(images.samples)) if progress else None
    run = _Run(key, config, images.samples, errors, progress, task)
    try:
        if mode == "image" and isinstance(metric, EmbeddingMetric):
            scores = _score_embedding(metric, images, cache_root, run, timings)
        elif mode == "image" and isinstance(metric, PairMetric):
            scores = _score_pairwise(metric, images, run)
        elif mode == "text" and isinstance(metric, TextEmbedder):
            scores = _score_text_embedding(metric, run)
        elif mode == "text" and isinstance(metric, PairMetric):
            scores = _score_text_pairwise(metric, run)
        elif mode == "image-text" and isinstance(metric, ImageTextMetric):
            scores = _score_image_text(metric, images, run)
        else:
            return MetricFailure(key, f"metric {name!r} declares it reads {mode!r} but is a {type(metric).__name__}, which cannot")
        info = metric.info.to_dict()
        if isinstance(metric, EmbeddingMetric):
            info["execution"] = metric.execution
            info["device_preprocessing"] = metric.device_steps
        if key != name or mode != "image":  # image keys record what they always recorded
            info["key"], info["mode"] = key, mode
    finally:
        metric.close()
        del metric
    timings[f"{key}.score_s"] = time.perf_counter() - t1
    if progress:
        progress.update(task, completed=len(images.samples))
    return scores, info


@dataclass
class _Run:
    """One key's scoring: where its results and per-sample errors go."""

    key: str
    config: ScoringConfig
    samples: list[_Sample]
    errors: list[SampleError]
    progress: Any
    task: Any

    def fail(self, index: int, message: str) -> None:
        self.errors.append(SampleError(self.samples[index].pair.sample_id, "metric", message, self.key))

    def advance(self, n: int) -> None:
        if self.progress:
            self.progress.advance(self.task, n)


def _isolated(indices: Sequence[int], run: Callable[[list[int]], Sequence[R]], fail: Callable[[int, str], None]) -> dict[int, R]:
    """``run`` on a batch; when the batch fails, on its items one by one so a bad item fails alone."""
    try:
        return dict(zip(indices, run(list(indices))))
    except _EMBED_ERRORS as err:
        if len(indices) == 1:
            fail(indices[0], str(err))
            return {}
    out: dict[int, R] = {}
    for index in indices:
        out.update(_isolated([index], run, fail))
    return out


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dot product of two L2-normalised embeddings, exactly rounded, clamped to [-1, 1].

    A float32 BLAS dot sums in an order that depends on memory alignment, so a reference
    read from the cache and the same one just computed gave scores differing in the 7th
    digit. Products of float32 values are exact in float64 and ``math.fsum`` is independent
    of order, so the score depends only on the two embeddings' values.
    """
    products = a.detach().to("cpu", torch.float64) * b.detach().to("cpu", torch.float64)
    return min(1.0, max(-1.0, math.fsum(products.tolist())))


def _missing_images(run: _Run, *, reference: bool) -> set[int]:
    """Samples that lack an image the image mode reads (a per-sample error each)."""
    missing: set[int] = set()
    for index, sample in enumerate(run.samples):
        if sample.pair.reconstruction is None:
            run.fail(index, "no reconstruction image to score (the sample has none)")
            missing.add(index)
        elif reference and sample.pair.reference is None:
            run.fail(index, "no reference image to score against (the sample has none)")
            missing.add(index)
    return missing


def _score_embedding(
    metric: EmbeddingMetric,
    images: _Images,
    cache_root: Path,
    run: _Run,
    timings: dict[str, float],
) -> MetricScores:
    config, progress, task = run.config, run.progress, run.task
    cache = EmbeddingCache(cache_root, metric.info) if config.use_cache else None
    samples = images.samples
    missing = _missing_images(run, reference=True)
    values: list[float | None] = [None] * len(samples)
    ref_embeddings: dict[int, torch.Tensor] = {}
    unique: dict[str, int] = {}  # reference bytes -> the sample whose reference is embedded
    dupes: dict[int, int] = {}  # sample -> the sample with a byte-identical reference

    def references_to_embed() -> Iterator[int]:
        """Live samples whose reference is neither cached nor a byte-identical copy of an
        earlier one (one embedding serves all copies), in order, each once it has decoded."""
        for index, sample in enumerate(samples):
            if index in missing or not images.resolve(index):
                continue
            cached = cache.get(sample.ref_hash) if cache and sample.ref_hash else None
            if cached is not None:
                ref_embeddings[index] = cached
                continue
            key = sample.ref_hash or f"#{index}"
            if key in unique:
                dupes[index] = unique[key]
            else:
                unique[key] = index
                yield index

    def embed_indices(indices: Sequence[int], pick) -> dict[int, torch.Tensor]:
        """Embed a batch; if the batch fails, retry one by one to isolate the bad sample."""
        return _isolated(indices, lambda batch: metric.embed([pick(samples[i]) for i in batch]), run.fail)

    def embed_all(indices: Iterable[int], pick, advance: bool = False) -> dict[int, torch.Tensor]:
        """Embed in batches through the preprocessing pipeline; isolate failures per sample."""
        out: dict[int, torch.Tensor] = {}
        batches = _batches(indices, config.batch_size)
        if not streaming:
            for batch in batches:
                out.update(embed_indices(batch, pick))
                if advance and progress:
                    progress.advance(task, len(batch))
            return out
        pipeline = _Pipeline(metric, _workers(config))
        try:
            for batch, result in pipeline.run(batches, lambda i: pick(samples[i])):
                if isinstance(result, Exception):
                    out.update(embed_indices(batch, pick))
                else:
                    out.update({i: result[k] for k, i in enumerate(batch)})
                if advance and progress:
                    progress.advance(task, len(batch))
        finally:
            pipeline.close()
            for key, value in (("preprocess_wait_s", pipeline.wait_s), ("forward_s", pipeline.forward_s)):
                timings[f"{metric.name}.{key}"] = timings.get(f"{metric.name}.{key}", 0.0) + value
        return out

    # With the pipeline (a GPU by default), references are embedded while later files still
    # decode; otherwise every file is decoded first, in parallel, and the work counted.
    streaming = metric.pipelined and config.overlaps()
    if streaming:
        references: Iterable[int] = references_to_embed()
        expected = 2 * len(samples)  # at most
    else:
        images.resolve_all()
        references = list(references_to_embed())
        # Reconstructions to embed: at most one per live sample.
        expected = len(references) + sum(1 for sample in samples if sample.ok)
    if config.fuses(expected):
        metric.enable_fusion()
    if config.device_mode() != "none":
        metric.preprocess_on_device(resize=config.device_mode() == "resize")
    for index, emb in embed_all(references, images.reference).items():
        ref_embeddings[index] = emb
        if cache and samples[index].ref_hash:
            cache.put(samples[index].ref_hash, emb)
    for index, source in dupes.items():
        if source in ref_embeddings:
            ref_embeddings[index] = ref_embeddings[source]
        else:  # the shared file failed to embed: give this sample its own error entry too
            ref_embeddings.update(embed_indices([index], images.reference))
    if cache:
        cache.flush()

    images.resolve_all()
    # Reconstructions get the same treatment: a file whose bytes were already embedded (as
    # a reference, or as another sample's reconstruction) is not embedded again. Real runs
    # rarely repeat a file; the sanity report compares every photo with every other.
    live = [i for i in range(len(samples)) if samples[i].ok and i in ref_embeddings and i not in missing]
    known = {samples[i].ref_hash: emb for i, emb in ref_embeddings.items() if samples[i].ref_hash}
    recon_embeddings: dict[int, torch.Tensor] = {}
    first: dict[str, int] = {}
    todo: list[int] = []
    recon_dupes: dict[int, int] = {}
    for index in live:
        key = samples[index].recon_hash or f"#{index}"
        if key in known:
            recon_embeddings[index] = known[key]
        elif key in first:
            recon_dupes[index] = first[key]
        else:
            first[key] = index
            todo.append(index)
    if progress:
        progress.advance(task, len(recon_embeddings) + len(recon_dupes))
    recon_embeddings.update(embed_all(todo, images.reconstruction, advance=True))
    for index, source in recon_dupes.items():
        if source in recon_embeddings:
            recon_embeddings[index] = recon_embeddings[source]
        else:
            recon_embeddings.update(embed_indices([index], images.reconstruction))
    for index, emb in recon_embeddings.items():
        values[index] = cosine(emb, ref_embeddings[index])
    return MetricScores(run.key, metric.unit, values)


def _score_verdicts(
    metric: PairMetric, run: _Run, live: Sequence[int], verdicts: Callable[[list[int]], list[PairScore]]
) -> MetricScores:
    """A PairMetric's verdicts on ``live`` samples, batch by batch: scores, sub-scores, errors."""
    samples = run.samples
    values: list[float | None] = [None] * len(samples)
    subs: dict[str, list[float | None]] = {}
    for batch in _batches(live, run.config.batch_size):
        results = verdicts(batch)
        if len(results) != len(batch):
            raise RuntimeError(f"metric {metric.name} returned {len(results)} scores for {len(batch)} samples")
        for index, result in zip(batch, results):
            if result.error is not None or result.value is None:
                run.fail(index, result.error or "no score")
                continue
            values[index] = float(result.value)
            for sub, value in result.sub_scores.items():
                subs.setdefault(sub, [None] * len(samples))[index] = float(value)
        run.advance(len(batch))
    return MetricScores(run.key, metric.unit, values, subs)


def _score_pairwise(metric: PairMetric, images: _Images, run: _Run) -> MetricScores:
    images.resolve_all()
    samples = images.samples
    missing = _missing_images(run, reference=not metric.reference_optional)
    live = [i for i, s in enumerate(samples) if s.ok and i not in missing]

    def verdicts(batch: list[int]) -> list[PairScore]:
        inputs = [
            PairInput(
                samples[i].pair.sample_id,
                images.reference(samples[i]),
                images.reconstruction(samples[i]),
                samples[i].pair.meta,
            )
            for i in batch
        ]
        return metric.score_pairs(inputs)

    return _score_verdicts(metric, run, live, verdicts)


# --------------------------------------------------------------------------- texts


def text_problem(pair: Pair, *, candidate: bool, reference_text: bool) -> str | None:
    """Why ``pair`` lacks a text its mode reads (None: it has them): the ``candidate`` text
    (a caption; text mode) and the ``reference_text`` (text-embedding pairs; image-text)."""
    if candidate and pair.text is None:
        return "no text to score (the sample has no caption)"
    if candidate and not pair.text.strip():
        return "empty caption: nothing to score"
    if reference_text and pair.reference_text is None:
        return "no reference text to score against (the sample has none)"
    if reference_text and not pair.reference_text.strip():
        return "empty reference text: nothing to score against"
    return None


def _live_texts(run: _Run, *, candidate: bool, reference_text: bool) -> list[int]:
    """Samples whose texts the mode can read; a per-sample error for each of the others."""
    live = []
    for index, sample in enumerate(run.samples):
        problem = text_problem(sample.pair, candidate=candidate, reference_text=reference_text)
        if problem is None:
            live.append(index)
        else:
            run.fail(index, problem)
    return live


def _embed_texts(
    metric: TextEmbedder, texts: Sequence[str], run: _Run
) -> tuple[dict[str, tuple[torch.Tensor, TokenCount]], dict[str, str]]:
    """Each distinct text embedded once, in batches: text -> (features, token count), and
    text -> error for a text its tower could not embed."""
    distinct = list(dict.fromkeys(texts))
    failed: dict[str, str] = {}

    def embed(batch: list[int]) -> list[tuple[torch.Tensor, TokenCount]]:
        out = metric.embed_texts([distinct[i] for i in batch])
        return list(zip(out.vectors, out.tokens))

    done: dict[int, tuple[torch.Tensor, TokenCount]] = {}
    for batch in _batches(range(len(distinct)), run.config.batch_size):
        done.update(_isolated(batch, embed, lambda i, message: failed.__setitem__(distinct[i], message)))
    return {distinct[i]: value for i, value in done.items()}, failed


def _score_text_embedding(metric: TextEmbedder, run: _Run) -> MetricScores:
    """Cosine of each sample's text and reference text; both texts' token counts recorded."""
    samples = run.samples
    live = _live_texts(run, candidate=True, reference_text=True)
    texts = [t for i in live for t in (samples[i].pair.reference_text, samples[i].pair.text)]
    embedded, failed = _embed_texts(metric, texts, run)
    values: list[float | None] = [None] * len(samples)
    tokens: dict[str, list[TokenCount | None]] = {"reference_text": [None] * len(samples), "text": [None] * len(samples)}
    for index in live:
        pair = samples[index].pair
        if pair.reference_text in failed or pair.text in failed:
            role, text = ("reference text", pair.reference_text) if pair.reference_text in failed else ("text", pair.text)
            run.fail(index, f"{role}: {failed[text]}")
            continue
        (ref, ref_tokens), (cand, cand_tokens) = embedded[pair.reference_text], embedded[pair.text]
        values[index] = cosine(cand, ref)
        tokens["reference_text"][index], tokens["text"][index] = ref_tokens, cand_tokens
    run.advance(len(samples))
    return MetricScores(run.key, metric.unit, values, tokens=tokens)


def _score_text_pairwise(metric: PairMetric, run: _Run) -> MetricScores:
    """A PairMetric's verdicts on each sample's text (against meta's ground truth, or its
    reference text when meta has none: the metric says when it has neither)."""
    samples = run.samples
    live = _live_texts(run, candidate=True, reference_text=False)

    def verdicts(batch: list[int]) -> list[PairScore]:
        pairs = [samples[i].pair for i in batch]
        return metric.score_texts([TextInput(p.sample_id, p.text, p.reference_text, p.meta) for p in pairs])

    return _score_verdicts(metric, run, live, verdicts)


def _score_image_text(metric: ImageTextMetric, images: _Images, run: _Run) -> MetricScores:
    """Cosine of each reconstruction's image features and its reference text's features."""
    images.resolve_all()
    samples = run.samples
    live = []
    for index in _live_texts(run, candidate=False, reference_text=True):
        if samples[index].pair.reconstruction is None:
            run.fail(index, "no image to score (the sample has no reconstruction)")
        elif samples[index].ok:  # a file that failed to decode is already a load error
            live.append(index)
    vectors: dict[int, torch.Tensor] = {}
    for batch in _batches(live, run.config.batch_size):
        vectors.update(_isolated(batch, lambda b: metric.embed([images.reconstruction(samples[i]) for i in b]), run.fail))
    embedded, failed = _embed_texts(metric, [samples[i].pair.reference_text for i in vectors], run)
    values: list[float | None] = [None] * len(samples)
    tokens: list[TokenCount | None] = [None] * len(samples)
    for index, image in vectors.items():
        text = samples[index].pair.reference_text
        if text in failed:
            run.fail(index, f"reference text: {failed[text]}")
            continue
        values[index] = cosine(image, embedded[text][0])
        tokens[index] = embedded[text][1]
    run.advance(len(samples))
    return MetricScores(run.key, metric.unit, values, tokens={"reference_text": tokens})
