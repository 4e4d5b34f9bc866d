"""Named evaluation datasets and how ``--data NAME|PATH`` is resolved.

``--data`` takes a registered name (``official``, ``photos``, ``shapes``, ``prompts``,
``photos-sanity``), ``hf:SOURCE`` for a Hugging Face dataset (hub name or local folder),
``prompts:PATH`` for a prompt file of the text trip (``.txt`` or ``.jsonl``, see
:mod:`unified_bench.datasets.prompts`), or a path: a ``save_to_disk`` folder is read with
``datasets``, any other folder as a folder of images. ``--data-arg KEY=VALUE`` passes loader
options (``split``, ``dir``, ``size``, ``detail``...). Loaders are imported only when used.

The table is a :class:`unified_bench.core.registry.Registry` (shared with the adapter and
metric registries). Installed packages add datasets through the entry-point group
``unified_bench.datasets``: ``my-set = "my_pkg.data:load"``, where ``load(options: dict[str,
str], cache_dir: Path | None) -> EvalDataset`` checks its own ``--data-arg`` options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from unified_bench.core.registry import Registry
from unified_bench.datasets.base import EvalDataset
from unified_bench.datasets.prompts import FORMATS as PROMPT_FORMATS, PROMPT_DEFAULT_METRICS
from unified_bench.core.errors import DatasetError

ENTRY_POINT_GROUP = "unified_bench.datasets"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: str  # "module:function(options: dict[str, str], cache_dir: Path | None) -> EvalDataset"
    description: str
    default_metrics: tuple[str, ...]
    options: tuple[str, ...] | None = ()  # accepted --data-arg keys; None: the loader checks them
    aliases: tuple[str, ...] = ()
    source: str = "builtin"  # "builtin" | "plugin:<distribution>"


def _plugin_spec(name: str, target: str, dist: str) -> DatasetSpec:
    return DatasetSpec(name, target, f"plugin dataset {target} (from the {dist} distribution)", (), None, source=f"plugin:{dist}")


#: The one registry of datasets (built-ins and ``unified_bench.datasets`` entry points).
REGISTRY: Registry[DatasetSpec] = Registry(
    "dataset", group=ENTRY_POINT_GROUP, plugin_spec=_plugin_spec, target=lambda spec: spec.loader, error=DatasetError
)

for _spec in [
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
        ("shapes-attr", "effnet"),  # not ssim: a blank image outscores a faithful one here
        options=("split", "size", "detail"),  # detail: the text trip's prompt, long or short caption
    ),
    DatasetSpec(
        "prompts",
        "unified_bench.datasets.prompts:load_bundled_prompts",
        "the bundled prompt set of the text trip (objects, counts, colours, relations, text, styles, long prompts)",
        PROMPT_DEFAULT_METRICS,
    ),
    DatasetSpec(
        "photos-sanity",
        "unified_bench.tracks.sanity:load_sanity_dataset",
        "degraded copies of the offline photos and unrelated photo pairs (the metric sanity report)",
        ("effnet", "ssim", "psnr"),
        options=("photos", "max_side", "levels"),
    ),
]:
    REGISTRY.register(_spec)
del _spec

#: The built-in entries (a live view: ``REGISTRY.entries``).
DATASETS: dict[str, DatasetSpec] = REGISTRY.entries


def list_datasets() -> list[DatasetSpec]:
    specs = REGISTRY.specs()
    return [specs[name] for name in sorted(specs)]


def load_eval_dataset(
    data: str,
    options: Mapping[str, str] | None = None,
    *,
    cache_dir: Path | None = None,
) -> EvalDataset:
    """Resolve ``--data`` (see the module docstring) to an :class:`EvalDataset`."""
    from unified_bench.datasets.folder import folder_dataset
    from unified_bench.datasets.hf import hf_dataset, is_saved_dataset
    from unified_bench.datasets.prompts import load_prompt_file

    options = dict(options or {})
    spec = _lookup(data)
    if spec is not None:
        unknown = sorted(set(options) - set(spec.options)) if spec.options is not None else []
        if unknown:
            accepted = ", ".join(spec.options or ()) or "none"
            raise DatasetError(f"dataset {spec.name!r} has no option {', '.join(unknown)} (accepted: {accepted})")
        loader: Callable[..., EvalDataset] = REGISTRY.load(spec, name=data)
        return loader(options, cache_dir)
    if data.startswith("prompts:"):
        if options:
            raise DatasetError(f"a prompt file takes no --data-arg (got {', '.join(sorted(options))})")
        if not data[len("prompts:"):]:
            raise DatasetError("--data prompts:PATH needs a path (or --data prompts for the bundled set)")
        return load_prompt_file(data[len("prompts:"):])
    if data.startswith("hf:"):
        return hf_dataset(data[3:], options)
    path = Path(data).expanduser()
    if path.is_file() and path.suffix.lower() in PROMPT_FORMATS:
        raise DatasetError(f"{data}: a prompt file is read with --data prompts:{data}")
    if is_saved_dataset(path):
        return hf_dataset(str(path), options)
    if path.is_dir():
        if options:
            raise DatasetError(f"an image folder takes no --data-arg (got {', '.join(sorted(options))})")
        return folder_dataset(path)
    problem = REGISTRY.problem(data)
    if problem is not None:
        raise DatasetError(REGISTRY.unknown_message(data))
    known = ", ".join(REGISTRY.names())
    raise DatasetError(
        f"--data {data!r} is neither a dataset name ({known}), 'hf:NAME' for a Hugging Face "
        "dataset, 'prompts:PATH' for a prompt file, nor an existing folder"
    )


def _lookup(name: str) -> DatasetSpec | None:
    return REGISTRY.lookup(name)


def _load_official(options: Mapping[str, str], cache_dir: Path | None) -> EvalDataset:
    from unified_bench.datasets.official import official_dataset

    return official_dataset(cache_dir=cache_dir, local_dir=options.get("dir"))


def _load_photos(options: Mapping[str, str], cache_dir: Path | None) -> EvalDataset:
    from unified_bench.datasets.photos import load_photos_dataset

    return load_photos_dataset(options, cache_dir)
