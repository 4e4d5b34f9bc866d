"""On-disk cache of reference embeddings (safetensors).

One file per (metric, MetricInfo.cache_key, loader version); inside it, one tensor per
reference keyed by the sha256 of the reference file's bytes. A second run over the same
references therefore encodes only the reconstructions. Files are replaced atomically.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from unified_bench.metrics.base import MetricInfo

#: Bump when images.load_image changes how pixels are decoded.
LOADER_VERSION = "2"  # 2: 32-bit integer images rescaled, not clipped


def default_cache_dir() -> Path:
    env = os.environ.get("UNIFIED_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unified_bench"


class EmbeddingCache:
    def __init__(self, root: Path, info: MetricInfo) -> None:
        self.path = Path(root) / "ref_embeddings" / f"{info.name}-{info.cache_key()}-l{LOADER_VERSION}.safetensors"
        self._entries: dict[str, torch.Tensor] = {}
        self._dirty = False
        if self.path.exists():
            try:
                self._entries = load_file(str(self.path))
            except (SafetensorError, OSError, ValueError):
                # A corrupt cache is only a lost speed-up: start over.
                self._entries = {}

    def get(self, content_hash: str) -> torch.Tensor | None:
        return self._entries.get(content_hash)

    def put(self, content_hash: str, embedding: torch.Tensor) -> None:
        self._entries[content_hash] = embedding.detach().to("cpu", torch.float32).contiguous().clone()
        self._dirty = True

    def flush(self) -> None:
        if not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        except OSError as err:
            # An unwritable cache is only a lost speed-up, like a corrupt one.
            warnings.warn(f"reference-embedding cache not written to {self.path.parent}: {err}", stacklevel=2)
            return
        os.close(fd)
        try:
            save_file(self._entries, tmp)
            os.replace(tmp, self.path)
        except OSError as err:
            warnings.warn(f"reference-embedding cache not written to {self.path}: {err}", stacklevel=2)
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._dirty = False
