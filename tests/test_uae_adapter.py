"""The reference model as a Unified-Bench adapter: registry, contract checks, determinism, record."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unified_bench.adapters.base import check_captions, check_images
from unified_bench.adapters.registry import build, resolve
from unified_bench.core.errors import ConfigError, WeightsNotFoundError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from uae_reference.presets import build_tiny_model

    path = tmp_path_factory.mktemp("uae") / "tiny"
    build_tiny_model(seed=1).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def refs():
    from unified_bench.tracks.shapes.splits import shapes_samples

    return [s.image for s in shapes_samples("val", size=256, limit=3)]


def test_registered_lazily():
    spec, preset_args = resolve("uae-tiny")
    assert spec.target == "uae_reference.adapter:UAETinyAdapter" and preset_args == {}
    assert resolve("uae-reference")[0].target == "uae_reference.adapter:UAEReferenceAdapter"


def test_round_trip_through_the_registry(checkpoint, refs):
    built = build("uae-reference", {"checkpoint": str(checkpoint), "num_steps": "3", "temperature": "0.7"})
    adapter = built.adapter
    assert built.args["num_steps"] == 3 and adapter.capabilities.native_resolution == (48, 48)
    captions = adapter.caption(refs, prompt="Describe this image in detail.", seeds=[1, 2, 3])
    assert len(check_captions(captions, 3)) == 3 and all(isinstance(c, str) for c in captions)
    prompts = ["One object: a large red circle in the center.", "Two objects: a small blue star in the top left.", "x"]
    images = adapter.generate(prompts, seeds=[1, 2, 3], size=(256, 256))
    assert all(o.ok for o in check_images(images, 3)) and images[0].size == (256, 256)
    # per-sample seeds: a sample's outputs do not depend on the rest of its batch
    assert adapter.caption(refs[1:2], prompt="", seeds=[2]) == captions[1:2]
    again = adapter.generate(prompts[1:2], seeds=[2], size=(256, 256))[0]
    diff = np.abs(np.asarray(again, dtype=np.int16) - np.asarray(images[1], dtype=np.int16)).max()
    assert diff <= 2  # float rounding of a different batch size, nothing more
    record = adapter.describe()
    assert record["checkpoint"] == str(checkpoint) and len(record["checkpoint_sha256"]) == 64
    assert record["num_inference_steps"] == 3 and record["caption_prompt"] == "Describe the image."
    adapter.close()


def test_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint=DIR"):
        build("uae-reference", {})
    with pytest.raises(WeightsNotFoundError, match="uae_config.json"):
        build("uae-reference", {"checkpoint": str(tmp_path)})
    with pytest.raises(ConfigError):
        build("uae-reference", {"checkpoint": str(tmp_path), "prompt": "mine"})


def test_shipped_tiny_checkpoint(refs):
    from uae_reference.adapter import BUNDLED_TINY

    assert (BUNDLED_TINY / "uae_config.json").is_file(), f"the shipped checkpoint is missing: {BUNDLED_TINY}"
    size = sum(p.stat().st_size for p in BUNDLED_TINY.rglob("*") if p.is_file())
    assert size <= 20 * 1024 * 1024
    adapter = build("uae-tiny", {"num_steps": "4"}).adapter
    from unified_bench.tracks.shapes.captions import parse

    captions = adapter.caption(refs, prompt="", seeds=[0, 1, 2])
    assert all(parse(c).objects for c in captions), captions  # it speaks the Shapes grammar
    image = adapter.generate(captions[:1], seeds=[0], size=None)[0]
    assert image.size == adapter.capabilities.native_resolution and image.mode == "RGB"
    assert torch.get_num_threads() >= 1


@pytest.mark.parametrize("stage", ["pre-rl", "g4u", "u4g"])
def test_bundled_rl_stages_load(stage, refs):
    adapter = build("uae-tiny", {"stage": stage, "num_steps": "2"}).adapter
    captions = adapter.caption(refs[:1], prompt="", seeds=[0])
    assert adapter.generate(captions, seeds=[0], size=None)[0].size == adapter.capabilities.native_resolution


@pytest.mark.slow
def test_demo_runs_the_shipped_model(tmp_path):
    """`make demo`'s job (unified-bench demo) on a few samples: a valid, scored run of uae-tiny."""
    import json
    import subprocess
    import sys

    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "unified_bench.cli", "demo", "--limit", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["similarities_by_model"]) >= {"shapes-attr", "effnet"}
    assert "ssim" not in results["similarities_by_model"]  # not a Shapes default (docs/metrics.md)
    assert results["run"]["model"]["name"] == "uae-tiny"
