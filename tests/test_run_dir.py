"""The run directory as one process's property: the lock (real processes contend for it, a
SIGKILLed holder's lock is taken over), resume that verifies what it finds and regenerates
what changed, and resume that ignores transport settings but not output settings."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console
from runner_helpers import LAUNCHER, REPO, cli_env, essentials, make_images, read_captions, run_cli

from unified_bench.adapters.registry import load_adapter_class, resolve, split_args
from unified_bench.core.errors import ConfigError, RunDirLockedError
from unified_bench.core.run_lock import LOCK_FILE, RunDirLock
from unified_bench.runner.distributed import ShardSpec
from unified_bench.runner.eval import EvalConfig, run_eval
from unified_bench.runner.merge import merge_shards
from unified_bench.scoring import ScoringConfig, score_folders

HOLD = (
    "import sys; from unified_bench.core.run_lock import RunDirLock\n"
    "with RunDirLock(sys.argv[1], command='holder'):\n"
    "    print('held', flush=True); sys.stdin.read()\n"
)


def config(data: Path, out: Path, **overrides) -> EvalConfig:
    values = dict(model="mock", data=str(data), out=out, metrics=["toy-pair"], model_args={"size": 32}, progress=False)
    values.update(overrides)
    return EvalConfig(**values)


def hold(directory: Path) -> subprocess.Popen:
    """A real process holding ``directory``'s lock until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0


# --- the lock -------------------------------------------------------------------------------


def test_every_writer_refuses_a_directory_another_process_holds(toys, tmp_path):
    data = make_images(tmp_path / "data", 2)
    out = tmp_path / "run"
    holder = hold(out)
    try:
        line = f"is in use by PID {holder.pid} on host {socket.gethostname()}"
        with pytest.raises(RunDirLockedError, match=line) as refused:
            run_eval(config(data, out))
        assert "\n" not in str(refused.value) and "holder" in str(refused.value)
        with pytest.raises(RunDirLockedError, match=line):
            score_folders(data, data, out, ScoringConfig(metrics=("toy-pair",)))
        with pytest.raises(RunDirLockedError, match=line):
            merge_shards([tmp_path / "no-such-shard"], out)
        from uae_reference.rl.evaluate import evaluate_stage

        # the trainer's evaluator is refused before it reads the checkpoint
        with pytest.raises(RunDirLockedError, match=line):
            evaluate_stage("pre-rl", tmp_path / "no-checkpoint", out, limit=2, progress=False)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        release(holder)
    assert not (out / LOCK_FILE).exists()  # a holder that exits removes its file
    run_eval(config(data, out))  # free again
    assert (out / "results.json").exists() and not (out / LOCK_FILE).exists()


def test_lock_is_reentrant_in_one_process_and_leaves_no_trace(tmp_path):
    fresh = tmp_path / "fresh"
    with RunDirLock(fresh) as outer:
        with RunDirLock(fresh):  # eval scoring its own run
            assert (fresh / LOCK_FILE).exists()
        assert (fresh / LOCK_FILE).exists()  # the outer holder still holds it
        assert outer.stale is None
    assert not fresh.exists()  # created for the lock, nothing written: removed again
    kept = tmp_path / "kept"
    with RunDirLock(kept):
        (kept / "results.json").write_text("{}")
    assert sorted(p.name for p in kept.iterdir()) == ["results.json"]


def start_gated(args: list[str], tmp: Path, gate: Path) -> subprocess.Popen:
    """A real ``eval`` of the gated mock that commits one sample, then waits for ``gate``."""
    return subprocess.Popen([sys.executable, str(LAUNCHER), *args, "--model", "gated_adapter:GatedMock",
                             "--model-arg", f"gate={gate}"],
                            env=cli_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_first_sample(proc: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 120
    while not (out / "captions.jsonl").exists() or not (out / "captions.jsonl").read_text():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the run never committed a sample"
        time.sleep(0.05)


@pytest.mark.slow
def test_second_eval_on_a_run_exits_2_naming_the_holder_and_the_first_completes(toys, tmp_path):
    data = make_images(tmp_path / "data", 6)
    reference = tmp_path / "reference"
    run_eval(config(data, reference, seed=3))
    out, gate = tmp_path / "run", tmp_path / "gate"
    common = ["eval", "--data", str(data), "--metrics", "toy-pair", "--model-arg", "size=32",
              "--seed", "3", "--out", str(out), "--no-progress", "--resume"]
    first = start_gated(common, tmp_path, gate)
    wait_for_first_sample(first, out)  # it holds the lock and waits at its second sample
    second = run_cli([*common, "--model", "gated_adapter:GatedMock"], tmp_path, check_codes=(2,))
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("error: ") and f"PID {first.pid} on host {socket.gethostname()}" in lines[0]
    gate.touch()
    assert first.wait(timeout=300) == 0, first.stderr.read()
    ids = [json.loads(line)["sample_id"] for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6  # every sample computed once
    assert essentials(out) == essentials(reference)


@pytest.mark.slow
def test_lock_of_a_sigkilled_run_does_not_block_resume(toys, tmp_path):
    data = make_images(tmp_path / "data", 6)
    reference = tmp_path / "reference"
    run_eval(config(data, reference))
    out, gate = tmp_path / "run", tmp_path / "gate"
    common = ["eval", "--data", str(data), "--metrics", "toy-pair", "--model-arg", "size=32",
              "--out", str(out), "--no-progress"]
    proc = start_gated(common, tmp_path, gate)
    wait_for_first_sample(proc, out)
    os.kill(proc.pid, signal.SIGKILL)  # the process this test started, by its id
    proc.wait(timeout=30)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == proc.pid  # left behind
    gate.touch()
    resumed = run_cli([*common, "--model", "gated_adapter:GatedMock", "--model-arg", f"gate={gate}", "--resume"], tmp_path)
    assert f"took over the lock of PID {proc.pid}" in resumed.stderr
    assert not (out / LOCK_FILE).exists()
    assert essentials(out) == essentials(reference)


# --- resume heals what changed ---------------------------------------------------------------


def test_resume_regenerates_samples_whose_files_changed(toys, tmp_path):
    data = make_images(tmp_path / "data", 6)
    untouched = tmp_path / "untouched"
    run_eval(config(data, untouched))
    out = tmp_path / "run"
    run_eval(config(data, out))
    row = read_captions(out)["img00"]
    assert len(row["image_sha256"]) == 64 and len(row["caption_sha256"]) == 64

    (out / "images" / "img01.png").write_bytes(b"")  # truncated to 0 bytes
    Image.new("RGB", (32, 32), (9, 9, 9)).save(out / "images" / "img02.png")  # altered, still a PNG
    (out / "images" / "img04.png").unlink()  # missing
    lines = (out / "captions.jsonl").read_text().splitlines()
    edited = [line.replace("quadrant colours", "quadrant colors") if '"img03"' in line else line for line in lines]
    (out / "captions.jsonl").write_text("\n".join(edited) + "\n")  # caption edited by hand

    said = io.StringIO()
    outcome = run_eval(config(data, out, resume=True), console=Console(file=said, width=400))
    assert outcome.healed == ["img01", "img02", "img03", "img04"]
    assert "resume: 4 finished sample(s) no longer match what was written" in said.getvalue()
    assert "img01: image truncated to 0 bytes" in said.getvalue()
    info = json.loads((out / "run.json").read_text())
    assert info["processed_this_session"] == 4 and info["invocations"][-1]["healed"] == 4
    assert essentials(out) == essentials(untouched)
    again = run_eval(config(data, out, resume=True))  # all verified now: nothing to redo
    assert again.healed == [] and json.loads((out / "run.json").read_text())["processed_this_session"] == 0


def test_lines_written_before_hashes_are_checked_by_decoding(toys, tmp_path):
    data = make_images(tmp_path / "data", 4)
    untouched = tmp_path / "untouched"
    run_eval(config(data, untouched))
    out = tmp_path / "run"
    run_eval(config(data, out, model_args={"size": 32, "slow_ms": 1}))
    # as an older version wrote them: no hashes in the lines, transport args among the
    # identity's model_args, no invocations
    rows = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    for row in rows:
        del row["image_sha256"], row["caption_sha256"]
    (out / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = json.loads((out / "run.json").read_text())
    assert info["model_args"] == {"size": 32} and info["invocations"][0]["transport"] == {"slow_ms": 1}
    info["model_args"] = {"size": 32, "slow_ms": 1}
    del info["invocations"]
    (out / "run.json").write_text(json.dumps(info))
    png = (out / "images" / "img02.png").read_bytes()
    (out / "images" / "img02.png").write_bytes(png[: len(png) // 2])  # truncated mid-file

    with pytest.raises(ConfigError, match="cannot resume, model_args differs"):  # an output setting
        run_eval(config(data, out, resume=True, model_args={"size": 16}))
    outcome = run_eval(config(data, out, resume=True))  # another slow_ms: a transport setting
    assert outcome.healed == ["img02"]  # the undecodable one; the others are trusted as before
    info = json.loads((out / "run.json").read_text())
    assert info["processed_this_session"] == 1 and len(info["invocations"]) == 1
    assert essentials(out) == essentials(untouched)


def test_merge_does_not_take_a_shard_sample_whose_image_changed(toys, tmp_path):
    data = make_images(tmp_path / "data", 6)
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for index, shard_dir in enumerate(shards):
        run_eval(config(data, shard_dir, shard=ShardSpec(index, 2)))
    victim = sorted(read_captions(shards[0]))[0]
    (shards[0] / "images" / f"{victim}.png").write_bytes(b"")
    outcome = merge_shards(shards, tmp_path / "merged", config(data, tmp_path / "merged"))
    assert [(e.sample_id, e.stage) for e in outcome.errors] == [(victim, "missing")]
    assert "image truncated to 0 bytes; resume that shard" in outcome.errors[0].message
    assert outcome.finished == 5


# --- transport settings ----------------------------------------------------------------------


def test_transport_arguments_are_split_from_output_arguments():
    remote = load_adapter_class(resolve("remote")[0])
    outputs, transport = split_args(remote, {"url": "http://h:1", "timeout_s": 5.0, "max_retries": 1})
    assert outputs == {} and transport == {"url": "http://h:1", "timeout_s": 5.0, "max_retries": 1}
    openai = load_adapter_class(resolve("openai")[0])
    outputs, transport = split_args(openai, {"base_url": "http://h/v1", "temperature": 0.2, "api_key_env": "K"})
    assert outputs == {"base_url": "http://h/v1", "temperature": 0.2} and transport == {"api_key_env": "K"}
    compose = load_adapter_class(resolve("compose")[0])
    values = {"captioner": "openai", "captioner_args": {"caption_model": "m", "timeout_s": 9},
              "generator": "mock", "generator_args": {"size": 32}}
    outputs, transport = split_args(compose, values)
    assert outputs == {"captioner": "openai", "captioner_args": {"caption_model": "m"},
                       "generator": "mock", "generator_args": {"size": 32}}
    assert transport == {"captioner_args": {"timeout_s": 9}}
