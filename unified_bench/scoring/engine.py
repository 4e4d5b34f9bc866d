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
"""

from __future__ import annotations

import gc
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from rich.console import Console

from unified_bench.core.errors import ConfigError, ImageLoadError, UnifiedBenchError
from unified_bench.core.images import file_sha256, load_image
from unified_bench.metrics import EmbeddingMetric, Metric, PairInput, PairMetric, build_metric
from unified_bench.metrics.device_resize import PackedImages
from unified_bench.metrics.graph import FUSE_MIN_IMAGES
from unified_bench.core.progress import progress_bar
from unified_bench.results.model import MetricScores, SampleError, SampleRecord, ScoreReport
from unified_bench.scoring.cache import EmbeddingCache, default_cache_dir
from unified_bench.scoring.pairing import Pair


def default_batch_size(device: str) -> int:
    """Images per forward when the user does not say: 64 on a GPU, where fewer, larger
    forwards cut launch overhead (benchmarks/scoring_throughput.py on an H100, ViT-B/16, 100
    pairs: 0.31 s at 16, 0.27 s at 32, 0.22-0.27 s at 64 and 128); 8 on a CPU, where a ViT-L/B
    forward is fastest per image at 4-8 (ViT-B/16 on this project's 2-core CPU: 221 ms per
    image at batch 8, 279 at batch 1, 241 at batch 16, as the activations outgrow the caches)."""
    return 64 if str(device).startswith("cuda") else 8


@dataclass
class ScoringConfig:
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

    def __post_init__(self) -> None:
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
                    pixels = ref.width * ref.height + recon.width * recon.height
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

    def reference(self, sample: _Sample) -> Image.Image:
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


def _decode(sample: "_Sample") -> tuple[tuple[Image.Image, Image.Image] | SampleError, float]:
    """Decode and hash one pair; a bad file becomes a per-sample ``load`` error. Also returns
    when it ended."""
    try:
        # Decode first: load_image refuses pipes and directories, which hashing would
        # block on or fail at with a less helpful message.
        ref = load_image(sample.pair.reference)
        sample.ref_hash = file_sha256(sample.pair.reference)
    except (ImageLoadError, OSError) as err:
        return SampleError(sample.pair.sample_id, "load", f"reference: {err}"), time.perf_counter()
    try:
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
            for name in config.metrics:
                outcome = _run_metric(name, config, images, cache_root, errors, progress, timings)
                if isinstance(outcome, MetricFailure):
                    failures.append(outcome)
                else:
                    metric_scores.append(outcome[0])
                    metric_infos.append(outcome[1])
                if name != config.metrics[-1]:
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
            SampleRecord(s.pair.sample_id, str(s.pair.reference), str(s.pair.reconstruction), s.ref_hash)
            for s in samples
        ],
        metrics=metric_scores,
        errors=errors,
        run={"metrics": metric_infos},
    )
    return report, failures, timings


def _run_metric(
    name: str,
    config: ScoringConfig,
    images: _Images,
    cache_root: Path,
    errors: list[SampleError],
    progress,
    timings: dict[str, float],
) -> tuple[MetricScores, dict] | MetricFailure:
    """Load one metric, score every live sample with it, release it."""
    t0 = time.perf_counter()
    try:
        metric = build_metric(name, checkpoint=config.checkpoints.get(name), device=config.device, dtype=config.dtype)
    except UnifiedBenchError as err:
        return MetricFailure(name, str(err))
    finally:
        images.start()  # no-op after the first metric
    timings[f"{name}.load_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    task = progress.add_task(name, total=len(images.samples)) if progress else None
    try:
        if isinstance(metric, EmbeddingMetric):
            scores = _score_embedding(metric, images, config, cache_root, errors, progress, task, timings)
        elif isinstance(metric, PairMetric):
            scores = _score_pairwise(metric, images, config, errors, progress, task)
        else:  # pragma: no cover - registry only holds the two kinds
            raise TypeError(f"metric {name} is neither an EmbeddingMetric nor a PairMetric")
        info = metric.info.to_dict()
        if isinstance(metric, EmbeddingMetric):
            info["execution"] = metric.execution
            info["device_preprocessing"] = metric.device_steps
    finally:
        metric.close()
        del metric
    timings[f"{name}.score_s"] = time.perf_counter() - t1
    return scores, info


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dot product of two L2-normalised embeddings, exactly rounded, clamped to [-1, 1].

    A float32 BLAS dot sums in an order that depends on memory alignment, so a reference
    read from the cache and the same one just computed gave scores differing in the 7th
    digit. Products of float32 values are exact in float64 and ``math.fsum`` is independent
    of order, so the score depends only on the two embeddings' values.
    """
    products = a.detach().to("cpu", torch.float64) * b.detach().to("cpu", torch.float64)
    return min(1.0, max(-1.0, math.fsum(products.tolist())))


def _score_embedding(
    metric: EmbeddingMetric,
    images: _Images,
    config: ScoringConfig,
    cache_root: Path,
    errors: list[SampleError],
    progress,
    task,
    timings: dict[str, float],
) -> MetricScores:
    cache = EmbeddingCache(cache_root, metric.info) if config.use_cache else None
    samples = images.samples
    values: list[float | None] = [None] * len(samples)
    ref_embeddings: dict[int, torch.Tensor] = {}
    unique: dict[str, int] = {}  # reference bytes -> the sample whose reference is embedded
    dupes: dict[int, int] = {}  # sample -> the sample with a byte-identical reference

    def references_to_embed() -> Iterator[int]:
        """Live samples whose reference is neither cached nor a byte-identical copy of an
        earlier one (one embedding serves all copies), in order, each once it has decoded."""
        for index, sample in enumerate(samples):
            if not images.resolve(index):
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
        out: dict[int, torch.Tensor] = {}
        try:
            batch = metric.embed([pick(samples[i]) for i in indices])
            out.update({i: batch[k] for k, i in enumerate(indices)})
        except (ImageLoadError, RuntimeError, ValueError) as err:
            if len(indices) == 1:
                errors.append(SampleError(samples[indices[0]].pair.sample_id, "metric", str(err), metric.name))
                return out
            for i in indices:
                out.update(embed_indices([i], pick))
        return out

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
    live = [i for i in range(len(samples)) if samples[i].ok and i in ref_embeddings]
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
    if progress:
        progress.update(task, completed=len(samples))
    return MetricScores(metric.name, metric.unit, values)


def _score_pairwise(
    metric: PairMetric,
    images: _Images,
    config: ScoringConfig,
    errors: list[SampleError],
    progress,
    task,
) -> MetricScores:
    images.resolve_all()
    samples = images.samples
    values: list[float | None] = [None] * len(samples)
    subs: dict[str, list[float | None]] = {}
    live = [i for i, s in enumerate(samples) if s.ok]
    for batch in _batches(live, config.batch_size):
        inputs = [
            PairInput(
                samples[i].pair.sample_id,
                images.reference(samples[i]),
                images.reconstruction(samples[i]),
                samples[i].pair.meta,
            )
            for i in batch
        ]
        results = metric.score_pairs(inputs)
        if len(results) != len(batch):
            raise RuntimeError(f"metric {metric.name} returned {len(results)} scores for {len(batch)} pairs")
        for index, result in zip(batch, results):
            if result.error is not None or result.value is None:
                errors.append(
                    SampleError(samples[index].pair.sample_id, "metric", result.error or "no score", metric.name)
                )
                continue
            values[index] = float(result.value)
            for sub, value in result.sub_scores.items():
                subs.setdefault(sub, [None] * len(samples))[index] = float(value)
        if progress:
            progress.advance(task, len(batch))
    if progress:
        progress.update(task, completed=len(samples))
    return MetricScores(metric.name, metric.unit, values, subs)
