"""Unified-GRPO at scale (issue 22): both stages' first update under FSDP on two CPU processes
equals one process's on the same global batch; the paper preset's per-GPU memory plan; the
launch configs; curves to TensorBoard."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from uae_reference.rl.config import G4UConfig, U4GConfig, rl_config
from unified_bench.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "rl_step_worker.py"
CONFIGS = REPO / "uae_reference" / "configs"
#: Adam's first step is lr * g / (|g| + 1e-8): where |g| is within float noise of zero the step is
#: noise divided by eps. Parameters are compared where the gradient is clear of that.
CLEAR_GRADIENT = 1e-6


# --- small pieces ---------------------------------------------------------------------------------


def test_row_chunks_cover_every_row_once():
    from uae_reference.rl.rollout import row_chunks

    assert row_chunks(7, 0) == [slice(0, 7)]
    assert row_chunks(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert row_chunks(4, 8) == [slice(0, 4)]


def test_new_fields_are_validated():
    from uae_reference.rl.distributed import report_targets

    assert report_targets("none") == [] and report_targets("tensorboard, wandb") == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="report_to"):
        G4UConfig(report_to="mlflow")
    with pytest.raises(ConfigError, match="sharding"):
        U4GConfig(sharding="zero2")
    with pytest.raises(ConfigError):
        G4UConfig(micro_batch_size=-1)
    tiny = rl_config("tiny", "g4u")
    assert (tiny.sharding, tiny.report_to, tiny.micro_batch_size, tiny.rollout_batch_size) == ("auto", "none", 0, 0)


def test_sharding_needs_a_process_group():
    from accelerate import Accelerator

    from uae_reference.rl.distributed import resolve_sharding

    accelerator = Accelerator(cpu=True)
    assert resolve_sharding("auto", accelerator) == "none"
    with pytest.raises(ConfigError, match="torchrun"):
        resolve_sharding("fsdp", accelerator)


def test_call_as_forward_runs_the_function_inside_the_modules_hooks():
    from uae_reference.rl.distributed import call_as_forward

    module = torch.nn.Linear(2, 2)
    seen = []
    module.register_forward_pre_hook(lambda m, args: seen.append("pre"))
    module.register_forward_hook(lambda m, args, out: seen.append("post"))
    assert call_as_forward(module, lambda a, b: seen.append("fn") or a + b, 2, b=3) == 5
    assert seen == ["pre", "fn", "post"]
    assert "forward" not in module.__dict__  # the class's forward is back
    assert module(torch.ones(1, 2)).shape == (1, 2)


def test_tracker_packages_are_checked_with_a_clear_message(monkeypatch):
    import importlib.util

    from uae_reference.rl.distributed import check_trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install wandb"):
        check_trackers(["wandb"])


# --- the memory plan ------------------------------------------------------------------------------


def _counts():
    from uae_reference.rl.memory import ParamCounts

    return ParamCounts(
        total=11_937_027_555, encoder=3_754_622_976, decoder=8_056_627_520, vae=83_819_683, projector=41_957_376,
        lora={"g4u": 59_867_136, "u4g": 47_161_344}, largest_unit=212_999_680, root_unit=514_712_035, units=106,
    )


def test_memory_plan_arithmetic():
    from uae_reference.rl.memory import GB, rl_memory_plan

    config = rl_config("paper", "u4g")
    fsdp = rl_memory_plan("u4g", config, _counts(), gpus=8, sharding="fsdp")
    ddp = rl_memory_plan("u4g", config, _counts(), gpus=8, sharding="none")
    frozen = fsdp.params - fsdp.trainable
    assert fsdp.trainable == 47_161_344 and fsdp.params == 11_937_027_555 + 47_161_344
    assert fsdp.held["frozen weights (bf16, /N)"] == pytest.approx(frozen * 2 / 8)
    assert ddp.held["frozen weights (bf16, whole)"] == pytest.approx(frozen * 2)
    assert fsdp.rollout["whole model gathered for the rollout (bf16)"] == pytest.approx(fsdp.params * 2)
    # sharding lowers what is held, not the rollout's peak (the rollout runs on whole parameters)
    assert fsdp.update_peak < ddp.update_peak
    assert fsdp.rollout_peak == pytest.approx(ddp.rollout_peak, rel=0.1)
    # micro-batches are what keep the update's activations in bounds
    whole = rl_memory_plan("u4g", config.replace(micro_batch_size=0), _counts(), sharding="fsdp")
    assert whole.update_peak > 10 * fsdp.update_peak and not whole.fits
    assert fsdp.fits and 20 * GB < fsdp.total < 80 * GB
    assert rl_memory_plan("u4g", config, _counts(), gpus=16, sharding="fsdp").total < fsdp.total


@pytest.mark.slow
def test_paper_rl_dry_run_prints_the_per_gpu_memory():
    from typer.testing import CliRunner

    from uae_reference.rl.cli import rl_app

    result = CliRunner().invoke(rl_app, ["train", "--preset", "paper", "--dry-run"], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "11,937,027,555 parameters" in out and "LoRA g4u 59,867,136, u4g 47,161,344" in out
    for stage in ("g4u", "u4g"):
        assert f"{stage}: per-GPU memory, 8 x 80 GB, FSDP2" in out and f"{stage}: per-GPU memory, 8 x 80 GB, DDP" in out
    assert out.count("total per GPU (fits 80 GiB with 10% headroom)") == 4
    assert "whole model gathered for the rollout" in out and "micro-batches of 4" in out
    # the dry run counts, it does not train: no init checkpoint is needed or read
    bad = CliRunner().invoke(rl_app, ["train", "--preset", "tiny", "--dry-run"])
    assert bad.exit_code != 0 and "paper" in str(bad.exception)


# --- launch configs --------------------------------------------------------------------------------


def test_rl_launch_configs_load_as_accelerate_reads_them():
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    from uae_reference.rl.distributed import DEFAULT_ZERO3_CONFIG, FSDP_UNIT_CLASSES

    fsdp = ClusterConfig.from_yaml_file(str(CONFIGS / "rl_fsdp.yaml"))
    assert fsdp.distributed_type == "FSDP" and fsdp.num_processes == 8 and fsdp.mixed_precision == "bf16"
    assert fsdp.fsdp_config["fsdp_version"] == 2
    assert set(fsdp.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")) == set(FSDP_UNIT_CLASSES)
    zero3 = ClusterConfig.from_yaml_file(str(CONFIGS / "rl_zero3.yaml"))
    assert zero3.distributed_type == "DEEPSPEED"
    ds_file = REPO / zero3.deepspeed_config["deepspeed_config_file"]
    assert ds_file == DEFAULT_ZERO3_CONFIG
    assert HfDeepSpeedConfig(str(ds_file)).is_zero3()  # accelerate's and transformers' reader
    assert ClusterConfig.from_yaml_file(str(CONFIGS / "rl_ddp.yaml")).distributed_type == "MULTI_GPU"


def test_zero3_config_passes_deepspeeds_own_validation():
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    parsed = DeepSpeedConfig(json.loads((CONFIGS / "rl_zero3.json").read_text()))
    assert parsed.zero_optimization_stage == 3 and parsed.gradient_clipping == 1.0


# --- two CPU processes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory):
    from test_rl_stages import untrained_but_responsive

    from uae_reference.presets import build_tiny_model

    path = tmp_path_factory.mktemp("rl-dist") / "init"
    untrained_but_responsive(build_tiny_model(seed=0)).save_pretrained(path)
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "CUDA_VISIBLE_DEVICES": ""}


def _run_pair(init: Path, out: Path, sharded: dict, single: dict) -> None:
    """The same global batch: two ranks of 2 prompts each (torchrun) and one process of 4, run side by side."""
    torchrun = Path(sys.executable).with_name("torchrun")
    ranks = subprocess.Popen(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(WORKER), str(init), str(out / "ranks"), json.dumps(sharded)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    one = subprocess.run([sys.executable, str(WORKER), str(init), str(out / "one"), json.dumps(single)], env=_env(), capture_output=True, text=True, timeout=900)
    log, _ = ranks.communicate(timeout=900)
    assert ranks.returncode == 0, log[-4000:]
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-3000:]


def _first_row(path: Path) -> dict:
    with open(path, newline="") as handle:
        return next(csv.DictReader(handle))


@pytest.mark.slow
def test_fsdp_first_update_equals_one_process(init_checkpoint, tmp_path):
    # two ranks of 2 prompts, FSDP, micro-batches of 3 rows (8 rows per rank: 3 + 3 + 2), blocks
    # recomputed in the backward pass; one process of 4 prompts whose rollout runs in batches of
    # 8 rows, as each rank's does
    _run_pair(
        init_checkpoint, tmp_path,
        sharded={"prompts_per_step": 2, "sharding": "fsdp", "micro_batch_size": 3, "gradient_checkpointing": True},
        single={"prompts_per_step": 4, "rollout_batch_size": 8},
    )
    for stage in ("g4u", "u4g"):
        ranks, one = tmp_path / "ranks" / stage, tmp_path / "one" / stage
        digests = {p.read_text() for p in ranks.glob("weights-rank*.sha256")}
        assert len(list(ranks.glob("weights-rank*.sha256"))) == 2 and len(digests) == 1, f"{stage}: ranks disagree"
        row_ranks, row_one = _first_row(ranks / "log.csv"), _first_row(one / "log.csv")
        for key in ("reward", "reward_std", "grad_norm"):  # the rollouts and the global gradient agree
            assert float(row_ranks[key]) == pytest.approx(float(row_one[key]), rel=1e-5, abs=1e-9), (stage, key)
        sharded, single = torch.load(ranks / "first_update.pt"), torch.load(one / "first_update.pt")
        grads = torch.cat([g.flatten() for g in single["grads"]])
        grad_diff = torch.cat([(a - b).flatten() for a, b in zip(sharded["grads"], single["grads"])]).abs()
        param_diff = torch.cat([(a - b).flatten() for a, b in zip(sharded["params"], single["params"])]).abs()
        clear = grads.abs() >= CLEAR_GRADIENT
        print(
            f"{stage}: {grads.numel()} trained parameters; max |grad diff| {grad_diff.max():.2e} (max |grad| {grads.abs().max():.2e}); "
            f"first update max |diff| {param_diff.max():.2e} overall, {param_diff[clear].max():.2e} where |grad| >= {CLEAR_GRADIENT:g} "
            f"({int((~clear).sum())} elements below)"
        )
        assert grad_diff.max() <= 1e-5 * grads.abs().max(), stage
        assert param_diff[clear].max() <= 1e-5, stage
        assert (param_diff > 1e-5).float().mean() < 1e-3, stage  # the rest: Adam's eps, a handful at most
        assert (one / "final" / "uae_config.json").is_file() and (ranks / "final" / "uae_config.json").is_file()


@pytest.mark.slow
def test_zero3_step_runs_on_two_cpu_processes(init_checkpoint, tmp_path):
    pytest.importorskip("deepspeed")
    _run_pair(
        init_checkpoint, tmp_path,
        sharded={"prompts_per_step": 2, "sharding": "zero3", "micro_batch_size": 3},
        single={"prompts_per_step": 4, "rollout_batch_size": 8},
    )
    for stage in ("g4u", "u4g"):
        ranks, one = tmp_path / "ranks" / stage, tmp_path / "one" / stage
        assert len({p.read_text() for p in ranks.glob("weights-rank*.sha256")}) == 1, f"{stage}: ranks disagree"
        # same captions and nearly the same rewards: ZeRO-3's flattened storage changes float
        # rounding, and rounding reconstructions to 8-bit pixels lets that reach the reward
        row_ranks, row_one = _first_row(ranks / "log.csv"), _first_row(one / "log.csv")
        assert float(row_ranks["reward"]) == pytest.approx(float(row_one["reward"]), abs=1e-4), stage
        assert float(row_ranks["grad_norm"]) == pytest.approx(float(row_one["grad_norm"]), rel=1e-3), stage
        assert (ranks / "final" / "uae_config.json").is_file()


# --- curves to TensorBoard ---------------------------------------------------------------------------


@pytest.mark.slow
def test_report_to_tensorboard_writes_the_logged_curves(init_checkpoint, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from uae_reference.rl.trainer import train_rl_stage

    common = dict(smoke=True, init_from=str(init_checkpoint), steps=2, num_threads=1, reconstruction="renderer", max_caption_tokens=12)
    result = train_rl_stage(rl_config("tiny", "g4u", output_dir=str(tmp_path / "tb"), report_to="tensorboard", **common), show_progress=False)
    events = list((tmp_path / "tb" / "tracking").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    scalars = {}
    for event_file in events:
        accumulator = EventAccumulator(str(event_file.parent))
        accumulator.Reload()
        scalars.update({tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]})
    with open(result.log_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [e.step for e in scalars["reward"]] == [1, 2]
    assert [e.value for e in scalars["reward"]] == pytest.approx([float(r["reward"]) for r in rows], rel=1e-5)
    assert "caption_length" in scalars and "kl" in scalars


def test_gradient_checkpointing_engages_in_both_stages():
    from uae_reference.presets import build_tiny_model
    from uae_reference.rl.g4u import condition_hidden
    from uae_reference.rl.trainer import configure_trainable, enable_checkpointing

    calls = []

    def spy(real):
        return lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs)

    for stage in ("g4u", "u4g"):
        model = build_tiny_model(seed=0).eval()  # as loaded: the RL stages run in eval mode
        module, params = configure_trainable(model, rl_config("tiny", stage))
        enable_checkpointing(model, module, stage)
        for sub in module.modules():  # the function transformers and diffusers call per checkpointed block
            if callable(vars(sub).get("_gradient_checkpointing_func")):
                sub._gradient_checkpointing_func = spy(sub._gradient_checkpointing_func)
        calls.clear()
        if stage == "g4u":
            loss = condition_hidden(model, ["one object : a red circle ."])[0].square().mean()
            layers = model.encoder.config.text_config.num_hidden_layers
        else:
            with torch.no_grad():
                cond = model.encode_condition(["one object : a red circle ."])
            x = torch.randn(1, *model.latent_shape)
            loss = model.velocity(x, torch.tensor([0.5]), cond).square().mean()
            layers = model.decoder.config.num_layers
        loss.backward()
        assert len(calls) >= layers, f"{stage}: {len(calls)} checkpointed blocks of {layers}"
        assert all(p.grad is not None for p in params)
