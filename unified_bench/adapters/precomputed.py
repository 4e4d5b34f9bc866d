"""``precomputed``: captions and images produced elsewhere, scored like any model's.

The folder holds ``captions.jsonl`` (one ``{"sample_id", "caption"}`` object per line; a
``seed`` field is optional) and the images as ``images/<sample_id>.<ext>`` or
``<sample_id>.<ext>``. Another run directory of ours works as is.

The adapter contract hands over seeds, not sample ids; since every seed is derived from
(run seed, sample id), the adapter maps seeds back to ids: give ``seed=`` the ``--seed``
of this evaluation (0 by default, like ``--seed``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from unified_bench.adapters.base import Adapter, Capabilities
from unified_bench.errors import ConfigError
from unified_bench.images import is_image_file, load_image
from unified_bench.runner.protocol import seed_for


@dataclass
class PrecomputedConfig:
    path: str = field(metadata={"help": "folder with captions.jsonl and the images"})
    seed: int = field(default=0, metadata={"help": "the evaluation's --seed (maps seeds back to sample ids)"})


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
        self.by_seed = {seed_for(self.config.seed, sid): sid for sid in self.captions}

    def _sample_id(self, seed: int) -> str:
        try:
            return self.by_seed[seed]
        except KeyError:
            raise KeyError(
                f"no precomputed sample for seed {seed}: the folder lacks this sample, or "
                f"--model-arg seed={self.config.seed} differs from the evaluation's --seed"
            ) from None

    def caption(self, images: list[Image.Image], *, prompt: str, seeds: list[int]) -> list[str]:
        return [self.captions[self._sample_id(seed)] for seed in seeds]

    def generate(self, prompts: list[str], *, seeds: list[int], size: tuple[int, int] | None) -> list[Image.Image]:
        return [load_image(self._image_path(self._sample_id(seed))) for seed in seeds]

    def _image_path(self, sample_id: str) -> Path:
        for folder in (self.root / "images", self.root):
            for candidate in sorted(folder.glob(f"{sample_id}.*")) if folder.is_dir() else []:
                if is_image_file(candidate):
                    return candidate
        raise FileNotFoundError(f"no image for sample {sample_id} in {self.root}/images or {self.root}")

    def describe(self) -> dict:
        return {"kind": "precomputed", "path": str(self.root.resolve()), "samples": len(self.captions)}
