"""``eval --dry-run``: resolves everything, loads nothing, writes nothing; exit 2 with the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from unified_bench.cli.app import app
from unified_bench.cli.entrypoint import run_app


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(images / f"{i}.png")
    return images


@pytest.fixture
def nothing_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    # import what the commands import lazily *before* patching: a module first imported under
    # the patch would keep the patched function for the rest of the process (other tests)
    import unified_bench.runner.eval  # noqa: F401
    import unified_bench.runner.plan  # noqa: F401
    import unified_bench.scoring.engine  # noqa: F401
    import unified_bench.metrics as metrics
    from unified_bench.adapters.mock import MockAdapter
    from unified_bench.adapters import registry

    def boom(*args, **kwargs):
        raise AssertionError("the dry run loaded something")

    monkeypatch.setattr(MockAdapter, "__init__", boom)
    monkeypatch.setattr(registry, "instantiate", boom)
    monkeypatch.setattr(metrics, "build_metric", boom)
    monkeypatch.setattr(metrics.METRICS, "load", boom)


def _run(args: list[str]) -> int:
    try:
        run_app(app, args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_missing_weight_exits_2_with_fix_before_loading(folder, tmp_path, nothing_loads, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = tmp_path / "run"
    code = _run(["eval", "--model", "mock", "--data", str(folder), "--out", str(out),
                 "--metrics", "clip", "--checkpoint", "clip=/nonexistent", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "'clip'" in err and "/nonexistent" in err
    assert "unified-bench weights fetch --metrics clip" in err and "--checkpoint clip=" in err
    assert not out.exists()


def test_hub_id_not_in_empty_cache_exits_2(folder, tmp_path, nothing_loads, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    code = _run(["eval", "--model", "mock", "--data", str(folder), "--out", str(tmp_path / "run"),
                 "--metrics", "clip", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1
    assert "'clip'" in err and "openai/clip-vit-large-patch14" in err and "not in the Hugging Face cache" in err
    assert "unified-bench weights fetch --metrics clip" in err


def test_offline_metrics_plan_exits_0_and_writes_nothing(folder, tmp_path, nothing_loads, capsys):
    out = tmp_path / "run"
    code = _run(["eval", "--model", "mock", "--data", str(folder), "--out", str(out),
                 "--metrics", "effnet,ssim", "--shard", "0/2", "--batch-size", "2", "--dry-run"])
    text = capsys.readouterr().out
    assert code == 0
    assert "3 samples" in text
    assert "shard 0/2; samples per shard 2/1" in text
    assert "1 caption + 1 generate (batch 2)" in text
    assert "metric forwards" in text and "2 (batch 8 on cpu)" in text
    assert not out.exists()


def test_plan_counts_unsharded(folder, tmp_path, nothing_loads):
    from unified_bench.runner.config import EvalConfig
    from unified_bench.runner.plan import plan_eval
    from unified_bench.scoring import ScoringConfig

    plan = plan_eval(EvalConfig(model="mock", data=str(folder), out=tmp_path / "run", metrics=["effnet", "ssim"],
                                scoring=ScoringConfig(metrics=(), batch_size=2)))
    assert plan.samples == 3 and plan.layout == [3]
    assert plan.caption_calls == 3  # batch 1
    assert [m.forwards for m in plan.metrics] == [4, 0]  # ceil(3/2) refs + ceil(3/2) recons; ssim none
    assert plan.metric_forwards == 4


def test_doctor_is_eval_dry_run(folder, tmp_path, nothing_loads, capsys):
    code = _run(["doctor", "--model", "mock", "--data", str(folder), "--metrics", "ssim"])
    assert code == 0
    assert "3 samples" in capsys.readouterr().out


def test_plan_fingerprint_is_the_one_the_run_records(tmp_path):
    """The dry run's fingerprint of an in-memory dataset (Shapes) equals the one a real run
    records, and says how it stands against the Shapes track's pin."""
    from unified_bench.results import read_report
    from unified_bench.runner.config import EvalConfig
    from unified_bench.runner.eval import run_eval
    from unified_bench.runner.plan import plan_eval
    from unified_bench.scoring import ScoringConfig

    config = EvalConfig(model="mock", data="shapes", out=tmp_path / "run", metrics=["ssim"], limit=3,
                        scoring=ScoringConfig(metrics=(), cache_dir=tmp_path / "cache"))
    plan = plan_eval(config)
    run_eval(config)
    recorded = read_report(tmp_path / "run" / "results.json").record.dataset.fingerprint()
    assert plan.fingerprint is not None and plan.fingerprint == recorded
    assert "track shapes: differs from the pinned 52a5e522d2b6 (3 samples here" in plan.fingerprint_status


def test_plan_fingerprint_of_a_folder_and_of_an_unpinned_official_set(folder, tmp_path, nothing_loads, monkeypatch):
    import hashlib

    from unified_bench.runner.config import EvalConfig
    from unified_bench.runner.plan import plan_eval

    plan = plan_eval(EvalConfig(model="mock", data=str(folder), out=tmp_path / "run", metrics=["ssim"]))
    lines = "".join(f"{p.stem}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in sorted(folder.iterdir()))
    assert plan.fingerprint == hashlib.sha256(lines.encode()).hexdigest()
    assert plan.fingerprint_status == "no leaderboard track ranks this dataset"
    noise = tmp_path / "noise"
    noise.mkdir()
    for i in range(100):
        Image.frombytes("RGB", (8, 8), bytes((i * 7 + j) % 256 for j in range(192))).save(noise / f"{i}.png")
    monkeypatch.setenv("UNIFIED_BENCH_OFFICIAL_DIR", str(noise))
    plan = plan_eval(EvalConfig(model="mock", data="official", out=tmp_path / "run2", metrics=["ssim"]))
    assert plan.samples == 100 and plan.fingerprint is not None
    assert "track unified-bench: nothing pinned yet, rows show 'dataset not verified'" in plan.fingerprint_status
