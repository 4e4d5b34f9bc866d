"""A Hugging Face dataset (hub name, local script/data folder, or ``save_to_disk`` output).

Options (``--data-arg``): ``split`` (default: ``test`` if present, else the first split),
``image_column`` (default: the first ``Image`` feature, else ``image``), ``id_column``
(default: the first of sample_id/id/image_id/file_name/filename, else the row index),
``meta_columns`` (comma-separated; default: every other JSON-serialisable column).
Images are read lazily, as the original encoded bytes where the dataset keeps them, so a
reference's SHA-256 is that of the published file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unified_bench.datasets.base import EvalDataset, Sample, check_unique, safe_sample_id
from unified_bench.core.errors import DatasetError

ID_COLUMNS = ("sample_id", "id", "image_id", "file_name", "filename", "name")
HF_DEFAULT_METRICS = ("effnet", "ssim", "psnr")


def is_saved_dataset(path: Path) -> bool:
    """Output of ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return path.is_dir() and any((path / marker).exists() for marker in ("state.json", "dataset_dict.json"))


def hf_dataset(source: str, options: Mapping[str, str] | None = None) -> EvalDataset:
    """Load ``source`` with the ``datasets`` library and describe it as samples."""
    import datasets  # heavy; only when an HF dataset is asked for

    options = dict(options or {})
    unknown = sorted(set(options) - {"split", "image_column", "id_column", "meta_columns", "revision"})
    if unknown:
        raise DatasetError(f"unknown --data-arg for a Hugging Face dataset: {', '.join(unknown)}")
    path = Path(source)
    try:
        if is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
        else:
            kwargs = {"revision": options["revision"]} if "revision" in options else {}
            loaded = datasets.load_dataset(source, **kwargs)
    except FileNotFoundError as err:
        raise DatasetError(f"Hugging Face dataset {source!r} not found ({err})") from err
    except Exception as err:  # the library raises many types for offline/missing/gated
        raise DatasetError(
            f"cannot load Hugging Face dataset {source!r}: {err}. Offline? Save it with "
            "save_to_disk() on a connected machine and pass that folder to --data"
        ) from err
    split = options.get("split")
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            split = "test" if "test" in loaded else next(iter(loaded))
        if split not in loaded:
            raise DatasetError(f"{source}: no split {split!r}; available: {', '.join(loaded)}")
        table = loaded[split]
    else:
        table = loaded
    image_column = options.get("image_column") or _image_column(table.features)
    if image_column not in table.column_names:
        raise DatasetError(
            f"{source}: no image column {image_column!r}; columns: {', '.join(table.column_names)} "
            "(pass --data-arg image_column=NAME)"
        )
    id_column = options.get("id_column") or next((c for c in ID_COLUMNS if c in table.column_names), None)
    if id_column is not None and id_column not in table.column_names:
        raise DatasetError(f"{source}: no id column {id_column!r}; columns: {', '.join(table.column_names)}")
    if "meta_columns" in options:
        meta_columns = [c.strip() for c in options["meta_columns"].split(",") if c.strip()]
    else:
        meta_columns = [c for c in table.column_names if c not in (image_column, id_column)]
    if isinstance(table.features[image_column], datasets.Image):
        # keep the encoded bytes: the reference file is then byte-identical to the published one
        table = table.cast_column(image_column, datasets.Image(decode=False))
    metadata = table.select_columns([c for c in (id_column, *meta_columns) if c]) if (id_column or meta_columns) else None
    rows = metadata.to_list() if metadata is not None else [{} for _ in range(len(table))]
    width = len(str(max(len(table) - 1, 0)))
    samples = []
    for index, row in enumerate(rows):
        raw_id = str(row[id_column]) if id_column else f"{index:0{width}d}"
        if id_column in ("file_name", "filename"):
            raw_id = str(Path(raw_id).with_suffix(""))
        meta = {c: row[c] for c in meta_columns if _jsonable(row.get(c))}
        samples.append(Sample(safe_sample_id(raw_id), image=_RowImage(table, image_column, index), meta=meta or None))
    return EvalDataset(
        f"hf:{source}" + (f":{split}" if split else ""),
        check_unique(samples, source),
        HF_DEFAULT_METRICS,
        f"Hugging Face dataset {source}" + (f" (split {split})" if split else ""),
        {"kind": "huggingface", "source": source, "split": split, "image_column": image_column, "id_column": id_column},
    )


class _RowImage:
    """Lazy reader of one row's image: encoded bytes if stored, else a decoded PIL image."""

    def __init__(self, table: Any, column: str, index: int) -> None:
        self.table, self.column, self.index = table, column, index

    def __call__(self):
        value = self.table[self.index][self.column]
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            if value.get("path") and Path(value["path"]).is_file():
                return Path(value["path"]).read_bytes()
            raise DatasetError(f"row {self.index}: image has neither bytes nor a readable path")
        return value


def _image_column(features: Any) -> str:
    import datasets

    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    return "image"


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
