"""Named evaluation datasets and how ``--data NAME|PATH`` is resolved.

``--data`` takes a registered name (``official``, ``photos``, ``shapes``), ``hf:SOURCE``
for a Hugging Face dataset (hub name or local folder), or a path: a ``save_to_disk``
folder is read with ``datasets``, any other folder as a folder of images. ``--data-arg
KEY=VALUE`` passes loader options (``split``, ``dir``, ``size``...). Loaders are imported
only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from unified_bench.datasets.base import EvalDataset
from unified_bench.core.errors import DatasetError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: str  # "module:function(options: dict[str, str], cache_dir: Path | None) -> EvalDataset"
    description: str
    default_metrics: tuple[str, ...]
    options: tuple[str, ...] = ()  # accepted --data-arg keys
    aliases: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "official",
            "unified_bench.datasets.registry:_load_official",
            "the paper's 100 reference images (downloaded on demand, cached)",
            ("clip", "dinov2", "dinov3", "longclip", "siglip"),
            options=("dir",),
            aliases=("unified-bench", "unibench"),
        ),
        DatasetSpec(
            "photos",
            "unified_bench.datasets.registry:_load_photos",
            "real photos that install offline with scikit-image, scikit-learn and matplotlib",
            ("effnet", "ssim", "psnr"),
        ),
        DatasetSpec(
            "shapes",
            "unified_bench.tracks.shapes.dataset:load_shapes",
            "procedural Shapes scenes with ground truth (offline, exact oracle)",
            ("shapes-attr", "effnet", "ssim"),
            options=("split", "size"),
        ),
    ]
}


def list_datasets() -> list[DatasetSpec]:
    return [DATASETS[name] for name in sorted(DATASETS)]


def load_eval_dataset(
    data: str,
    options: Mapping[str, str] | None = None,
    *,
    cache_dir: Path | None = None,
) -> EvalDataset:
    """Resolve ``--data`` (see the module docstring) to an :class:`EvalDataset`."""
    from unified_bench.datasets.folder import folder_dataset
    from unified_bench.datasets.hf import hf_dataset, is_saved_dataset

    options = dict(options or {})
    spec = _lookup(data)
    if spec is not None:
        unknown = sorted(set(options) - set(spec.options))
        if unknown:
            accepted = ", ".join(spec.options) or "none"
            raise DatasetError(f"dataset {spec.name!r} has no option {', '.join(unknown)} (accepted: {accepted})")
        module_name, _, attr = spec.loader.partition(":")
        loader: Callable[..., EvalDataset] = getattr(importlib.import_module(module_name), attr)
        return loader(options, cache_dir)
    if data.startswith("hf:"):
        return hf_dataset(data[3:], options)
    path = Path(data).expanduser()
    if is_saved_dataset(path):
        return hf_dataset(str(path), options)
    if path.is_dir():
        if options:
            raise DatasetError(f"an image folder takes no --data-arg (got {', '.join(sorted(options))})")
        return folder_dataset(path)
    known = ", ".join(sorted(DATASETS))
    raise DatasetError(
        f"--data {data!r} is neither a dataset name ({known}), 'hf:NAME' for a Hugging Face "
        "dataset, nor an existing folder"
    )


def _lookup(name: str) -> DatasetSpec | None:
    if name in DATASETS:
        return DATASETS[name]
    for spec in DATASETS.values():
        if name in spec.aliases:
            return spec
    return None


def _load_official(options: Mapping[str, str], cache_dir: Path | None) -> EvalDataset:
    from unified_bench.datasets.official import official_dataset

    return official_dataset(cache_dir=cache_dir, local_dir=options.get("dir"))


def _load_photos(options: Mapping[str, str], cache_dir: Path | None) -> EvalDataset:
    from unified_bench.datasets.photos import load_photos_dataset

    return load_photos_dataset(options, cache_dir)
