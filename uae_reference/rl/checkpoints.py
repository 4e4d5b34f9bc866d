"""Where the tiny model's Unified-GRPO stages live, for ``--model uae-tiny --model-arg stage=...``.

    uae_reference/checkpoints/uae-tiny/                 the shipped model: the last RL stage (u4g)
    uae_reference/checkpoints/uae-tiny-stages/pre-rl/   before RL (decoder pretraining, SFT, cold start)
    uae_reference/checkpoints/uae-tiny-stages/g4u/      after G4U (encoder changed, decoder as pre-rl)

``uae-reference rl train --stage all --init-from <pre-rl> --export-stages`` writes this layout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from unified_bench.core.errors import ConfigError, WeightsNotFoundError
from uae_reference.model import EXPORT_DTYPE, UAEModel

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
BUNDLED = CHECKPOINTS / "uae-tiny"
STAGES_DIR = CHECKPOINTS / "uae-tiny-stages"
#: ``final`` is whatever ships as ``uae-tiny``; after RL that is the U4G result
TINY_STAGES: tuple[str, ...] = ("final", "pre-rl", "g4u", "u4g")
REBUILD = (
    "uae-reference rl train --stage all --init-from uae_reference/checkpoints/uae-tiny-stages/pre-rl "
    "--output-dir runs/uae-tiny-rl --export-stages"
)


def stage_checkpoint(stage: str) -> Path:
    """The folder of one stage of the bundled tiny model (raises if it is not there)."""
    if stage not in TINY_STAGES:
        raise ConfigError(f"uae-tiny: stage must be one of {', '.join(TINY_STAGES)}, got {stage!r}")
    path = BUNDLED if stage in ("final", "u4g") else STAGES_DIR / stage
    if not (path / "uae_config.json").is_file():
        raise WeightsNotFoundError(f"uae-tiny stage {stage!r}: no checkpoint at {path}; rebuild the stages with `{REBUILD}`")
    return path


def export_stages(pre_rl: Path, g4u: Path, u4g: Path) -> dict[str, Path]:
    """Copy the three stage checkpoints into the bundled layout (``u4g`` becomes ``uae-tiny``)."""
    targets = {"pre-rl": STAGES_DIR / "pre-rl", "g4u": STAGES_DIR / "g4u", "u4g": BUNDLED}
    sources = {"pre-rl": Path(pre_rl), "g4u": Path(g4u), "u4g": Path(u4g)}
    staged = {}
    for name, src in sources.items():  # copy first, replace after: a failed copy leaves the old layout
        if not (src / "uae_config.json").is_file():
            raise WeightsNotFoundError(f"{name}: no checkpoint at {src}")
        tmp = targets[name].with_name(targets[name].name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        UAEModel.from_pretrained(src, dtype=EXPORT_DTYPE).save_pretrained(tmp)  # stored as float16
        staged[name] = tmp
    for name, tmp in staged.items():
        if targets[name].exists():
            shutil.rmtree(targets[name])
        tmp.rename(targets[name])
    return targets
