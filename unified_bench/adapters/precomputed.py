"""``precomputed``: captions and images produced elsewhere, scored like any model's.

The folder holds ``captions.jsonl`` (one ``{"sample_id", "caption"}`` object per line; a
``seed`` field is optional) and the images as ``images/<sample_id>.<ext>`` or
``<sample_id>.<ext>``. Another run directory of ours works as is.

Outputs are looked up by the sample ids the runner hands over with every call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.core.errors import ConfigError
from unified_bench.core.images import is_image_file, load_image


@dataclass
class PrecomputedConfig:
    path: str = field(metadata={"help": "folder with captions.jsonl and the images"})


class PrecomputedAdapter(Adapter):
    """Captions and images from a folder (a previous run, or another tool's output)."""

    name = "precomputed"
    config_class = PrecomputedConfig
    capabilities = Capabilities(max_batch_size=64, deterministic=True)

    def __init__(self, config: PrecomputedConfig) -> None:
        self.config = config
        root = Path(self.config.path)
        captions_file = root / "captions.jsonl"
        if not captions_file.is_file():
            raise ConfigError(f"precomputed: {captions_file} not found; pass --model-arg path=FOLDER with a captions.jsonl")
        self.root = root
        self.captions: dict[str, str] = {}
        for number, line in enumerate(captions_file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                self.captions[str(row["sample_id"])] = row["caption"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ConfigError(f"{captions_file}:{number}: expected {{\"sample_id\", \"caption\"}} ({err})") from err

    def _ids(self, sample_ids: list[str] | None, count: int) -> list[str]:
        if sample_ids is None or len(sample_ids) != count:
            raise ValueError("precomputed replays outputs by sample id: call it with sample_ids, one per input")
        return list(sample_ids)

    def _caption_of(self, sample_id: str) -> str:
        try:
            return self.captions[sample_id]
        except KeyError:
            raise KeyError(f"no precomputed caption for sample {sample_id} in {self.root}/captions.jsonl") from None

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int], sample_ids: list[str] | None = None) -> list[str]:
        return [self._caption_of(sid) for sid in self._ids(sample_ids, len(seeds))]

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None, sample_ids: list[str] | None = None) -> list[Image.Image]:
        return [load_image(self._image_path(sid)) for sid in self._ids(sample_ids, len(seeds))]

    def _image_path(self, sample_id: str) -> Path:
        for folder in (self.root / "images", self.root):
            for candidate in sorted(folder.glob(f"{sample_id}.*")) if folder.is_dir() else []:
                if is_image_file(candidate):
                    return candidate
        raise FileNotFoundError(f"no image for sample {sample_id} in {self.root}/images or {self.root}")

    def describe(self) -> dict:
        return {"kind": "precomputed", "path": str(self.root.resolve()), "samples": len(self.captions)}
