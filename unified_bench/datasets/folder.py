"""A folder of images as an evaluation dataset (ids from file stems)."""

from __future__ import annotations

from pathlib import Path

from unified_bench.datasets.base import EvalDataset, Sample, check_unique, safe_sample_id
from unified_bench.core.errors import DatasetError
from unified_bench.core.images import is_image_file

#: Metrics for a user's own folder: the paper's four need downloaded weights, these do not.
FOLDER_DEFAULT_METRICS = ("effnet", "ssim", "psnr")


def folder_dataset(path: str | Path, *, name: str | None = None) -> EvalDataset:
    """Every image under ``path`` (recursively); a nested ``a/b.png`` gets the id ``a_b``."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p) and not p.name.startswith("."))
    if not files:
        raise DatasetError(f"{root}: no image files found (looked for .png, .jpg, .webp, ...)")
    samples = [
        Sample(safe_sample_id(str(p.relative_to(root).with_suffix("")).replace("\\", "/")), reference=p.resolve())
        for p in files
    ]
    return EvalDataset(
        name or root.name,
        check_unique(samples, str(root)),
        FOLDER_DEFAULT_METRICS,
        f"image folder {root}",
        {"kind": "folder", "path": str(root.resolve())},
    )
