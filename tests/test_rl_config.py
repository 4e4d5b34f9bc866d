"""Unified-GRPO configs: validation, round trips, every field documented, the doc table complete."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from uae_reference.config import field_docs
from uae_reference.lora import LoraSettings
from uae_reference.rl.config import (
    CONFIG_CLASSES,
    PAPER_RL,
    TINY_RL,
    G4UConfig,
    RLConfig,
    U4GConfig,
    load_rl_config,
    rl_config,
)
from unified_bench.core.errors import ConfigError

DOC = Path(__file__).resolve().parents[1] / "docs" / "unified-grpo.md"
#: plumbing, not hyperparameters: not in the doc's table
BOOKKEEPING = {"stage", "init_from", "output_dir", "seed", "log_every", "log_examples", "num_threads", "mixed_precision", "train_split", "reward"}
#: how a run is spread and logged (memory and plumbing, not maths): docs/rl-distributed.md
BOOKKEEPING |= {"report_to", "sharding", "micro_batch_size", "rollout_batch_size", "gradient_checkpointing"}


@pytest.mark.parametrize("cls", [G4UConfig, U4GConfig])
def test_every_field_is_documented(cls):
    docs = {**field_docs(RLConfig), **field_docs(cls)}
    missing = [f.name for f in fields(cls) if not docs.get(f.name)]
    assert not missing, f"{cls.__name__} fields without a #: comment: {missing}"


def test_the_doc_table_lists_every_hyperparameter():
    text = DOC.read_text()
    table = {m.group(1) for m in re.finditer(r"^\| `([a-z_.]+)`", text, flags=re.M)}
    for cls in CONFIG_CLASSES.values():
        for f in fields(cls):
            if f.name not in BOOKKEEPING:
                assert f.name in table, f"docs/unified-grpo.md has no row for `{f.name}`"
    assert "reward.metric" in table


def test_validation():
    with pytest.raises(ConfigError):
        G4UConfig(std_scope="global")
    with pytest.raises(ConfigError):
        G4UConfig(normalisation="mean")
    with pytest.raises(ConfigError):
        G4UConfig(group_size=1)
    with pytest.raises(ConfigError):
        G4UConfig(prompts_per_step=3, group_size=3, updates_per_step=2)
    with pytest.raises(ConfigError):
        U4GConfig(noise_level=0.0)
    with pytest.raises(ConfigError):
        U4GConfig(train_fraction=0.0)
    with pytest.raises(ConfigError, match="kl_scale"):
        U4GConfig(kl_scale="dpo")
    with pytest.raises(ConfigError):
        rl_config("tiny", "cold")
    with pytest.raises(ConfigError):
        rl_config("huge", "g4u")


def test_round_trip_and_overrides(tmp_path):
    config = rl_config("tiny", "u4g", smoke=True, output_dir=str(tmp_path), lora={"r": 4, "alpha": 8})
    assert isinstance(config.lora, LoraSettings) and config.lora.r == 4
    assert config.steps == 3 and config.sde_steps == 3 and config.noise_level == TINY_RL["u4g"].noise_level
    path = tmp_path / "rl_config.json"
    path.write_text(config.to_json())
    assert load_rl_config(path) == config
    assert rl_config("tiny", "g4u", lora=None).lora is None  # --set lora=null: full weights


def test_presets_follow_their_sources():
    assert PAPER_RL["g4u"].lora == LoraSettings(r=32, alpha=64)  # the released encoder LoRA
    u4g = PAPER_RL["u4g"]
    assert (u4g.group_size, u4g.noise_level, u4g.sde_steps, u4g.beta, u4g.clip_low) == (24, 0.7, 10, 0.04, 1e-4)
    assert u4g.lora == LoraSettings(r=32, alpha=64) and u4g.std_scope == "batch"
    assert u4g.kl_scale == "flow-grpo"  # Flow-GRPO's beta, so Flow-GRPO's KL term
    assert TINY_RL["u4g"].kl_scale == "exact"  # what the shipped uae-tiny was trained with
    for stage in ("g4u", "u4g"):
        assert TINY_RL[stage].reward.metric == "effnet"


def test_the_docs_preset_table_is_the_presets():
    """docs/unified-grpo.md quotes `uae-reference rl help-config --markdown` (regenerate it with --write-doc)."""
    from uae_reference.rl.config import preset_table_markdown
    from uae_reference.rl.doc_blocks import read_block

    assert read_block(DOC.read_text(), "rl-presets") == preset_table_markdown()
    assert "| `kl_scale` | — | exact | — | flow-grpo |" in preset_table_markdown()
