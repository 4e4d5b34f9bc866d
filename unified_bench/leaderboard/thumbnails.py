"""Gallery thumbnails with deterministic bytes, named by the source file's SHA-256.

Naming by content means a reference shared by fifty runs is decoded and written once, and a
rebuild writes the same names and bytes (baseline JPEG at a fixed quality, no metadata).
Most of the cost is opening small files, so :meth:`Thumbnailer.prepare` works through them
with a thread pool; the output does not depend on the order the threads finish in.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from unified_bench.core.errors import ImageLoadError
from unified_bench.core.images import file_sha256, load_image

THUMB_MAX_SIDE = 192
JPEG_QUALITY = 85
THUMB_DIR = "thumbs"


def default_workers() -> int:
    return min(16, 4 * (os.cpu_count() or 1))


class Thumbnailer:
    """Makes thumbnails under ``site/thumbs``; calling it returns a site-relative path or None."""

    def __init__(self, site: Path, workers: int | None = None) -> None:
        self.site = site
        self.workers = workers or default_workers()
        self.by_path: dict[Path, str | None] = {}
        self.written: set[str] = set()
        self.failed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._dirs: set[Path] = set()

    def prepare(self, sources: Iterable[Path | None]) -> None:
        """Make the thumbnails of every source at once (in parallel)."""
        todo = sorted({p.resolve() for p in sources if p is not None} - set(self.by_path))
        if not todo:
            return
        with ThreadPoolExecutor(self.workers) as pool:
            made = list(pool.map(self._make, todo))
        for key, rel in zip(todo, made, strict=True):
            # a file whose twin (same bytes) failed to decode has no thumbnail either
            self.by_path[key] = rel if rel in self.written else None

    def __call__(self, source: Path | None) -> str | None:
        if source is None:
            return None
        key = source.resolve()
        if key not in self.by_path:
            self.by_path[key] = self._make(key)
        return self.by_path[key]

    def _make(self, source: Path) -> str | None:
        try:
            digest = file_sha256(source)
        except OSError as err:
            with self._lock:
                self.failed[str(source)] = str(err)
            return None
        rel = f"{THUMB_DIR}/{digest[:2]}/{digest}.jpg"
        with self._lock:  # one writer per content hash
            if rel in self.written:
                return rel
            self.written.add(rel)
        try:
            image = load_image(source)
        except ImageLoadError as err:
            with self._lock:
                self.failed[str(source)] = str(err)
                self.written.discard(rel)
            return None
        out = self.site / rel
        with self._lock:  # at most 256 folders; made under the lock so no thread writes before its folder exists
            if out.parent not in self._dirs:
                out.parent.mkdir(parents=True, exist_ok=True)
                self._dirs.add(out.parent)
        out.write_bytes(thumbnail_bytes(image))
        return rel


def thumbnail_bytes(image: Image.Image) -> bytes:
    """JPEG bytes of ``image`` shrunk to fit THUMB_MAX_SIDE (a pure function of the pixels)."""
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE), Image.Resampling.BICUBIC, reducing_gap=2.0)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buffer.getvalue()
