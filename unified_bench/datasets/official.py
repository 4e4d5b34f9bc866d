"""The official 100-image Unified-Bench reference set: downloaded on demand, cached, verified.

The manifest (``official_manifest.json``) names the published archive and has places to pin
the archive's and each image's SHA-256. Until they are pinned, every run still records each
reference's SHA-256, so two runs can prove they used the same images.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from unified_bench.datasets.base import EvalDataset
from unified_bench.datasets.folder import folder_dataset
from unified_bench.core.errors import DatasetError
from unified_bench.core.images import file_sha256

#: A folder that already holds the images (e.g. unzipped on an air-gapped cluster).
ENV_DIR = "UNIFIED_BENCH_OFFICIAL_DIR"
_COMPLETE = ".complete"


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    description: str
    source: str
    url: str
    folder: str
    count: int
    default_metrics: tuple[str, ...]
    archive_sha256: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # file name -> pinned sha256
    fingerprint: str | None = None  # dataset_fingerprint of the set (sample id -> sha256)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            name=data["name"],
            title=data["title"],
            description=data["description"],
            source=data["source"],
            url=data["url"],
            folder=data["folder"],
            count=int(data["count"]),
            default_metrics=tuple(data["default_metrics"]),
            archive_sha256=data.get("archive_sha256"),
            files=dict(data.get("files") or {}),
            fingerprint=data.get("fingerprint") or None,
        )


def load_manifest(path: str | Path | None = None) -> Manifest:
    if path is None:
        text = resources.files("unified_bench.datasets").joinpath("official_manifest.json").read_text()
    else:
        text = Path(path).read_text(encoding="utf-8")
    return Manifest.from_dict(json.loads(text))


def official_dataset(
    *,
    cache_dir: str | Path | None = None,
    manifest: Manifest | None = None,
    local_dir: str | Path | None = None,
    timeout_s: float = 60.0,
) -> EvalDataset:
    """The official set from ``local_dir``, ``$UNIFIED_BENCH_OFFICIAL_DIR``, the cache, or
    (first use) a download of the published archive into the cache."""
    manifest = manifest or load_manifest()
    local = local_dir or os.environ.get(ENV_DIR)
    if local:
        folder = Path(local)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: official image folder not found (from {'--data-arg dir' if local_dir else ENV_DIR})")
        origin = "local folder"
    else:
        root = Path(cache_dir) if cache_dir else _default_root()
        folder = root / "datasets" / manifest.name / manifest.folder
        origin = "cache"
        if not (folder / _COMPLETE).exists():
            download_and_extract(manifest, folder, timeout_s=timeout_s)
            origin = "downloaded"
    verify_folder(folder, manifest)
    dataset = folder_dataset(folder, name=manifest.name)
    dataset.default_metrics = manifest.default_metrics
    dataset.description = manifest.title
    dataset.source = {
        "kind": "official",
        "url": manifest.url,
        "source": manifest.source,
        "path": str(folder.resolve()),
        "origin": origin,
        "hashes_pinned": bool(manifest.files),
    }
    return dataset


def _default_root() -> Path:
    from unified_bench.scoring.cache import default_cache_dir

    return default_cache_dir()


def download_and_extract(manifest: Manifest, folder: Path, *, timeout_s: float = 60.0) -> None:
    """Fetch the archive, check its pinned hash, unzip ``manifest.folder`` into ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as tmp:
        archive = Path(tmp) / "archive.zip"
        try:
            with urllib.request.urlopen(manifest.url, timeout=timeout_s) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = getattr(err, "reason", None) or err
            raise DatasetError(
                f"cannot download the official Unified-Bench images from {manifest.url} ({reason}). "
                f"Offline? Fetch that archive on a connected machine, unzip it, and pass its "
                f"'{manifest.folder}' folder with --data official --data-arg dir=PATH (or set {ENV_DIR}=PATH)"
            ) from err
        if manifest.archive_sha256:
            digest = file_sha256(archive)
            if digest != manifest.archive_sha256:
                raise DatasetError(
                    f"{manifest.url}: archive sha256 {digest} does not match the pinned "
                    f"{manifest.archive_sha256}; the published file changed or the download is corrupt"
                )
        extracted = Path(tmp) / "extracted"
        _safe_unzip(archive, extracted)
        inner = _find_folder(extracted, manifest.folder)
        (inner / _COMPLETE).write_text(manifest.url + "\n")
        if folder.exists():  # a stale partial extraction from an interrupted earlier run
            shutil.rmtree(folder)
        os.replace(inner, folder)


def _safe_unzip(archive: Path, dest: Path) -> None:
    """Extract refusing entries that would land outside ``dest`` (zip-slip)."""
    dest.mkdir(parents=True)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as handle:
            for info in handle.infolist():
                target = (dest / info.filename).resolve()
                if root != target and root not in target.parents:
                    raise DatasetError(f"{archive}: entry {info.filename!r} escapes the archive folder")
            handle.extractall(dest)
    except zipfile.BadZipFile as err:
        raise DatasetError(f"downloaded file is not a zip archive ({err})") from err


def _find_folder(extracted: Path, name: str) -> Path:
    """The archive's image folder: ``name`` at the top, or the top itself when it holds images."""
    candidate = extracted / name
    if candidate.is_dir():
        return candidate
    matches = [p for p in extracted.rglob(name) if p.is_dir()]
    if matches:
        return matches[0]
    return extracted


def verify_folder(folder: Path, manifest: Manifest) -> None:
    """Count and (when pinned) hashes must match the manifest."""
    dataset = folder_dataset(folder, name=manifest.name)
    if len(dataset) != manifest.count:
        raise DatasetError(
            f"{folder}: found {len(dataset)} images, the official set has {manifest.count}; "
            "the folder is incomplete or not the official set"
        )
    if manifest.files:
        by_name = {s.reference.name: s.reference for s in dataset.samples if s.reference is not None}
        wrong = [name for name, digest in manifest.files.items() if name not in by_name or file_sha256(by_name[name]) != digest]
        if wrong:
            raise DatasetError(f"{folder}: {len(wrong)} image(s) differ from the pinned hashes: {', '.join(sorted(wrong)[:10])}")


def pin_hashes(folder: str | Path) -> dict[str, str]:
    """file name -> sha256 of a verified copy; paste into the manifest's ``files``."""
    dataset = folder_dataset(folder)
    return {s.reference.name: file_sha256(s.reference) for s in dataset.samples if s.reference is not None}


def official_location(*, cache_dir: str | Path | None = None, local_dir: str | Path | None = None) -> tuple[Path, str, bool]:
    """Where :func:`official_dataset` would read the set from, without downloading:
    ``(folder, origin, present)``; ``present`` False means the first eval downloads it."""
    local = local_dir or os.environ.get(ENV_DIR)
    if local:
        folder = Path(local)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: official image folder not found (from {'--data-arg dir' if local_dir else ENV_DIR})")
        return folder, "local folder", True
    manifest = load_manifest()
    root = Path(cache_dir) if cache_dir else _default_root()
    folder = root / "datasets" / manifest.name / manifest.folder
    return folder, "cache", (folder / _COMPLETE).exists()


def manifest_path() -> Path:
    """The packaged manifest file (in a source checkout: the file to commit after pinning)."""
    return Path(__file__).with_name("official_manifest.json")


@dataclass(frozen=True)
class PinResult:
    manifest: Path
    files: int
    fingerprint: str
    archive_sha256: str | None  # None: no archive found, the manifest's value is kept
    archive: Path | None


def pin_official(
    folder: str | Path,
    *,
    manifest_file: str | Path | None = None,
    archive: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> PinResult:
    """Write the manifest's per-file hashes, fingerprint and (when the archive is at hand:
    ``archive``, or the downloaded file's name in the cache) archive hash.

    The fingerprint is :func:`unified_bench.results.record.dataset_fingerprint` over the sample
    ids and reference hashes exactly as a run records them, so the leaderboard's dataset check
    compares like with like. The folder must hold the manifest's image count.
    """
    from unified_bench.results.record import dataset_fingerprint

    path = Path(manifest_file) if manifest_file is not None else manifest_path()
    data = json.loads(path.read_text(encoding="utf-8"))
    manifest = Manifest.from_dict(data)
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    dataset = folder_dataset(folder, name=manifest.name)
    if len(dataset) != manifest.count:
        raise DatasetError(f"{folder}: found {len(dataset)} images, the manifest's set has {manifest.count}; nothing pinned")
    by_id = {s.sample_id: file_sha256(s.reference) for s in dataset.samples if s.reference is not None}
    files = {s.reference.name: by_id[s.sample_id] for s in dataset.samples if s.reference is not None}
    fingerprint = dataset_fingerprint(by_id)
    if fingerprint is None:
        raise DatasetError(f"{folder}: cannot fingerprint (a sample has no reference file)")
    if archive is None:
        root = Path(cache_dir) if cache_dir else _default_root()
        candidate = root / "datasets" / manifest.name / Path(manifest.url).name
        archive = candidate if candidate.is_file() else None
    archive_path = Path(archive) if archive is not None else None
    archive_sha = file_sha256(archive_path) if archive_path is not None else None
    data["files"] = dict(sorted(files.items()))
    data["fingerprint"] = fingerprint
    if archive_sha is not None:
        data["archive_sha256"] = archive_sha
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return PinResult(path, len(files), fingerprint, archive_sha, archive_path)
