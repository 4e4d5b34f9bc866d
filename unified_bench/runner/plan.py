"""``unified-bench eval --dry-run`` / ``unified-bench doctor``: resolve a run without running it.

:func:`plan_eval` resolves the adapter (class and coerced arguments, not constructed), the
protocol, the dataset (location and sample count; the official set is not downloaded),
each metric's weights (found on disk or in the hub cache, not loaded), the devices, the
shard layout and the number of forward passes. The first problem raises a
:class:`~unified_bench.core.errors.UnifiedBenchError` whose one-line message says the fix
(the CLI turns it into exit 2); otherwise it returns an :class:`EvalPlan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unified_bench.core.errors import ConfigError, DatasetError, UnifiedBenchError
from unified_bench.runner.config import EvalConfig
from unified_bench.runner.distributed import ShardSpec, detect_process_group

#: Metrics that compare pixels or parse scenes: no backbone forward.
_NO_FORWARD = frozenset({"ssim", "psnr", "shapes-attr"})


@dataclass(frozen=True)
class MetricPlan:
    name: str
    checkpoint: str | None
    location: str  # where the weights are, or why none are needed
    forwards: int  # backbone forwards over references + reconstructions, all shards


@dataclass(frozen=True)
class ShardPlan:
    index: int
    count: int
    samples: int
    adapter_calls: int  # caption calls (= generate calls)


@dataclass
class EvalPlan:
    model: str
    adapter: str  # "module:Class"
    adapter_args: dict[str, Any]
    protocol: str
    dataset: str
    dataset_location: str
    samples: int
    adapter_batch: int
    shards: list[ShardPlan]
    shards_planned: str  # "shard I/N", "N ranks", "single process"
    layout: list[int]  # samples per shard, all N shards (what this command runs is ``shards``)
    metrics: list[MetricPlan]
    metric_device: str
    metric_batch: int
    cuda: bool
    gpus: int
    notes: list[str] = field(default_factory=list)
    #: the set's fingerprint (None: not computable here, e.g. the official set not downloaded)
    fingerprint: str | None = None
    #: the fingerprint against what the leaderboard's tracks pin for this dataset, one line
    fingerprint_status: str = ""
    trip: str = "image"
    cycles: int = 1

    @property
    def caption_calls(self) -> int:
        """Caption calls (= generate calls) over every cycle: at most, a sample that fails
        in one cycle is not run in the next."""
        return sum(s.adapter_calls for s in self.shards) * self.cycles

    @property
    def metric_forwards(self) -> int:
        return sum(m.forwards for m in self.metrics)


def plan_eval(config: EvalConfig) -> EvalPlan:
    """Resolve ``config`` without loading a model or metric weights (see the module docstring)."""
    from unified_bench.adapters.registry import declared_args, prepare

    from unified_bench.runner.config import check_trip

    if config.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    check_trip(config.trip, config.cycles, config.captions_from)
    # adapter: registry resolve + argument coercion, no construction
    spec, cls, values = prepare(config.model, dict(config.model_args))
    caps = getattr(cls, "capabilities", None)
    # capabilities an adapter sets from its arguments (mock: max_batch_size, size) come from
    # the coerced values, else the declared defaults, else the class's capabilities
    settings = {**{a.name: a.default for a in declared_args(cls) if not a.required}, **values}
    cap = settings.get("max_batch_size") if isinstance(settings.get("max_batch_size"), int) else getattr(caps, "max_batch_size", 1)
    adapter_batch = max(1, min(config.batch_size, cap or 1))
    native = getattr(caps, "native_resolution", None)
    if native is None and isinstance(settings.get("size"), int):
        native = (settings["size"], settings["size"])
    size = config.size or native or (config.protocol.generation.width, config.protocol.generation.height)
    protocol = config.protocol.with_size(tuple(size))

    # devices
    cuda, gpus = _cuda()
    for where, device in (("--device", config.scoring.device), ("--model-arg device", values.get("device"))):
        if isinstance(device, str) and device.startswith("cuda") and not cuda:
            raise ConfigError(f"{where} {device!r} but CUDA is not available here; use cpu or run on a machine with a GPU")

    # dataset
    dataset, location, notes = _dataset(config)
    all_ids = [s.sample_id for s in dataset.samples]
    if not all_ids:
        raise DatasetError(f"--data {config.data!r} has no samples; point it at a folder of images or a dataset name")

    if not isinstance(dataset.samples[0], _Id):  # the official set, not downloaded, has images
        from unified_bench.runner.eval import check_dataset_for_trip

        check_dataset_for_trip(dataset, config.trip, config.data)
    fingerprint, fingerprint_status = _fingerprint_status(dataset, all_ids)

    # shards
    group = detect_process_group()
    if group is not None and config.shard is not None:
        raise ConfigError("--shard cannot be combined with a torchrun/SLURM launch; the launch already shards")
    if config.shard is not None:
        specs, how = [config.shard], f"shard {config.shard.index}/{config.shard.count}"
    elif group is not None:
        specs, how = [ShardSpec(r, group.world_size) for r in range(group.world_size)], f"{group.world_size} ranks"
    else:
        specs, how = [ShardSpec(0, 1)], "single process"
    shards = []
    for shard in specs:
        n = len(shard.select(all_ids)) if shard.count > 1 else len(all_ids)
        shards.append(ShardPlan(shard.index, shard.count, n, math.ceil(n / adapter_batch)))
    scored = sum(s.samples for s in shards)
    count = specs[0].count
    owners = [len(ShardSpec(i, count).select(all_ids)) for i in range(count)] if count > 1 else [len(all_ids)]

    # metrics: weights located, not loaded
    names = list(config.metrics or dataset.default_metrics or ())
    if not names:
        raise ConfigError("no --metrics given and the dataset declares no default metrics; pass --metrics")
    if not config.metrics:
        from unified_bench.runner.score import trip_metrics

        has_images = any(getattr(s, "reference", None) is not None or getattr(s, "image", None) is not None for s in dataset.samples)
        names = trip_metrics(names, config.trip, has_images=has_images)
    metric_batch = config.scoring.batch_size or 1
    # cycle 1 compares each output with the original; every later cycle also with the previous output
    compared = scored * (2 * config.cycles - 1)
    metrics = [_metric(name, config.scoring.checkpoints.get(name), compared, metric_batch) for name in names]

    return EvalPlan(
        model=config.model,
        adapter=spec.target,
        adapter_args=dict(values),
        protocol=protocol.name,
        dataset=dataset.name,
        dataset_location=location,
        samples=len(all_ids),
        adapter_batch=adapter_batch,
        shards=shards,
        shards_planned=how,
        layout=owners,
        metrics=metrics,
        metric_device=config.scoring.device,
        metric_batch=metric_batch,
        cuda=cuda,
        gpus=gpus,
        notes=notes,
        fingerprint=fingerprint,
        fingerprint_status=fingerprint_status,
        trip=config.trip,
        cycles=config.cycles,
    )


def _fingerprint_status(dataset: Any, ids: list[str]) -> tuple[str | None, str]:
    """The fingerprint the run will record (one SHA-256 over the sorted ids and reference
    hashes) and how it stands against each leaderboard track that ranks this dataset."""
    import hashlib

    from unified_bench.core.images import file_sha256
    from unified_bench.datasets.base import encode_reference
    from unified_bench.leaderboard.tracks import TRACKS
    from unified_bench.results.record import dataset_fingerprint

    tracks = [t for t in TRACKS if t.ranks_dataset(dataset.name)]
    samples = list(dataset.samples)
    if samples and all(isinstance(s, _Id) for s in samples):
        return None, "computed after the download (the set is not here yet)"
    hashes: dict[str, str | None] = {}
    for sample in samples:  # the hashes the runner records: the file, or the bytes it writes to refs/
        try:
            if sample.reference is not None:
                hashes[sample.sample_id] = file_sha256(sample.reference)
            else:
                hashes[sample.sample_id] = hashlib.sha256(encode_reference(sample)[0]).hexdigest()
        except (OSError, UnifiedBenchError):
            hashes[sample.sample_id] = None
    fingerprint = dataset_fingerprint(hashes)
    if fingerprint is None:
        return None, "not computable (a reference cannot be read; eval reports it per sample)"
    if not tracks:
        return fingerprint, "no leaderboard track ranks this dataset"
    parts = []
    for track in tracks:
        pinned = track.pinned_fingerprint()
        if pinned is None:
            parts.append(f"track {track.slug}: nothing pinned yet, rows show 'dataset not verified'")
        elif pinned == fingerprint:
            parts.append(f"track {track.slug}: matches the pinned set")
        else:
            parts.append(
                f"track {track.slug}: differs from the pinned {pinned[:12]} ({len(ids)} samples here; "
                "the run will not be verified there)"
            )
    return fingerprint, "; ".join(parts)


def _cuda() -> tuple[bool, int]:
    try:
        import torch
    except ImportError:
        return False, 0
    available = bool(torch.cuda.is_available())
    return available, torch.cuda.device_count() if available else 0


def _dataset(config: EvalConfig) -> tuple[Any, str, list[str]]:
    from unified_bench.datasets.registry import REGISTRY, load_eval_dataset

    spec = REGISTRY.lookup(config.data)
    if spec is not None and spec.name == "official":
        from unified_bench.datasets.base import EvalDataset
        from unified_bench.datasets.official import load_manifest, official_location

        unknown = sorted(set(config.data_args) - {"dir"})
        if unknown:
            raise DatasetError(f"dataset 'official' has no option {', '.join(unknown)} (accepted: dir)")
        folder, origin, present = official_location(cache_dir=config.scoring.cache_dir, local_dir=config.data_args.get("dir"))
        if present:
            dataset = load_eval_dataset(config.data, config.data_args, cache_dir=config.scoring.cache_dir).limited(config.limit)
            return dataset, f"{folder} ({origin})", []
        # not downloaded yet: count from the manifest, download nothing
        manifest = load_manifest()
        ids = [Path(f).stem for f in sorted(manifest.files)] or [str(i) for i in range(manifest.count)]
        ids = ids[: config.limit] if config.limit else ids
        placeholder = EvalDataset(manifest.name, [_Id(i) for i in ids], manifest.default_metrics)  # type: ignore[list-item]
        note = f"the official set is not in the cache yet; eval downloads it from {manifest.url} into {folder}"
        return placeholder, f"{folder} (not downloaded)", [note]
    dataset = load_eval_dataset(config.data, config.data_args, cache_dir=config.scoring.cache_dir).limited(config.limit)
    where = dataset.source.get("path") if isinstance(dataset.source, dict) else None
    return dataset, str(where or config.data), []


@dataclass(frozen=True)
class _Id:
    sample_id: str


def _metric(name: str, override: str | None, samples: int, batch: int) -> MetricPlan:
    from unified_bench.metrics import get_spec
    from unified_bench.metrics.weights import locate_checkpoint

    base, at, mode = name.partition("@")  # "NAME@image": the image metric NAME on the text trip's drawing
    spec = get_spec(base)
    name = spec.name + at + mode
    checkpoint = override or spec.default_checkpoint
    forwards = 0 if spec.name in _NO_FORWARD else 2 * math.ceil(samples / batch)  # references + reconstructions
    if spec.name == "effnet" and checkpoint and not Path(checkpoint).expanduser().exists():
        from unified_bench.metrics.effnet import wheel_weights

        return MetricPlan(name, checkpoint, str(wheel_weights(checkpoint)), forwards)
    if not checkpoint or (spec.offline and not override):
        return MetricPlan(name, checkpoint, "no download needed", forwards)
    found = locate_checkpoint(spec.name, checkpoint)
    return MetricPlan(name, checkpoint, str(found.path), forwards)
