"""Sharding and batching never change results: --shard I/N + merge, torchrun with gloo, batch sizes."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from runner_helpers import LAUNCHER, VENV_BIN, cli_env, essentials, make_images, read_captions, torchrun_eval

from unified_bench.core.errors import ConfigError
from unified_bench.core.seeds import deal_order, seed_for, shard_assignment
from unified_bench.runner.distributed import ShardSpec, detect_process_group, parse_shard
from unified_bench.runner.eval import EvalConfig, run_eval
from unified_bench.runner.merge import merge_shards


def config(data, out, **kw):
    base = dict(model="mock", data=str(data), out=out, metrics=["toy-pair", "toy-embed"], model_args={"size": 32},
                progress=False, seed=11)
    base.update(kw)
    return EvalConfig(**base)


def test_parse_and_detect():
    assert parse_shard("1/4") == ShardSpec(1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    assert detect_process_group({}) is None
    assert detect_process_group({"RANK": "0", "WORLD_SIZE": "1"}) is None
    group = detect_process_group({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert (group.rank, group.world_size, group.local_rank, group.launcher, group.rendezvous) == (1, 2, 1, "torchrun", True)
    slurm = detect_process_group({"SLURM_PROCID": "2", "SLURM_NTASKS": "3", "SLURM_LOCALID": "0"})
    assert (slurm.rank, slurm.world_size, slurm.launcher, slurm.rendezvous) == (2, 3, "slurm", False)
    assert slurm.shard == ShardSpec(2, 3)


def test_detect_refuses_launches_it_cannot_read():
    """A launch whose rank or world size is unreadable fails with one line, never runs alone."""
    accelerate_cpu = {"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no",
                      "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}  # accelerate launch --cpu --num_processes 2
    for env, match in ((accelerate_cpu, "accelerate launch was asked for several processes"),
                       ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
                       ({"RANK": "1"}, "RANK is set but WORLD_SIZE is not"),
                       ({"RANK": "0", "WORLD_SIZE": "two"}, "'two' is not an integer")):
        with pytest.raises(ConfigError, match=match) as err:
            detect_process_group(env)
        assert "\n" not in str(err.value)
    # accelerate with one process sets no rendezvous: a plain single run
    assert detect_process_group({"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no"}) is None
    group = detect_process_group({**accelerate_cpu, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (group.rank, group.world_size, group.launcher, group.rendezvous) == (1, 2, "accelerate", True)
    mpi = detect_process_group({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "1"})
    assert (mpi.rank, mpi.world_size, mpi.local_rank, mpi.launcher) == (1, 3, 1, "mpirun")
    assert detect_process_group({"PMI_RANK": "0", "PMI_SIZE": "1"}) is None


def _sweep():
    """(shard count, sample ids) cases: every N in 1..16 with 0..300 samples, ids of mixed shapes."""
    rng = random.Random(21)
    for count in range(1, 17):
        for n in sorted({0, 1, 2, count - 1, count, count + 1, 8, 100, 299, 300, *rng.sample(range(301), 12)}):
            if n < 0:
                continue
            style = rng.choice(["n", "img", "shapes"])
            ids = [str(i) if style == "n" else f"{style}-{i:05d}" if style == "shapes" else f"{style}{i}" for i in range(n)]
            yield count, ids


def test_shard_sizes_differ_by_at_most_one_and_partition():
    """Acceptance 6: for any N in 1..16 and 0..300 samples, sizes differ by <= 1 and the shards
    partition the set; the deal ignores the listing order and seeds ignore the deal."""
    cases = 0
    for count, ids in _sweep():
        shards = [ShardSpec(i, count).select(ids) for i in range(count)]
        sizes = [len(s) for s in shards]
        assert max(sizes) - min(sizes) <= 1, (count, len(ids), sizes)
        assert sorted(sid for s in shards for sid in s) == sorted(ids)  # a partition: no overlap, no gap
        shuffled = ids[:]
        random.Random(count).shuffle(shuffled)
        assert shard_assignment(shuffled, count) == shard_assignment(ids, count)
        cases += 1
    assert cases > 16 * 12
    # the examples: 8 over 3 gave 6/2/0, the official 100 over 8 gave 9 to 17
    assert sorted(len(ShardSpec(i, 3).select([f"img{k}" for k in range(8)])) for i in range(3)) == [2, 3, 3]
    assert {len(ShardSpec(i, 8).select([f"{k:03d}" for k in range(100)])) for i in range(8)} == {12, 13}
    assert deal_order(["b", "a", "b"]) == deal_order(["a", "b"])  # duplicates are dealt once
    assert seed_for(0, "0") == 960439038  # seeds still come from (global seed, sample id) alone


def test_same_results_whatever_batch_size_or_shard_count(toys, tmp_path):
    """Acceptance 5: same seed -> identical captions, images and scores."""
    data = make_images(tmp_path / "data", 9)
    baseline = tmp_path / "b1"
    run_eval(config(data, baseline, batch_size=1))
    expected = essentials(baseline)
    assert len(expected["captions"]) == 9
    for batch_size in (3, 8):
        out = tmp_path / f"b{batch_size}"
        run_eval(config(data, out, batch_size=batch_size))
        assert essentials(out) == expected, f"batch size {batch_size} changed the results"
    for count in (2, 3):
        shards = []
        for index in range(count):
            shard_dir = tmp_path / f"n{count}" / f"s{index}"
            outcome = run_eval(config(data, shard_dir, shard=ShardSpec(index, count), batch_size=4))
            assert outcome.role == "shard" and not (shard_dir / "results.json").exists()  # shards do not score
            shards.append(shard_dir)
        assert sum(len(read_captions(s)) for s in shards) == 9  # a partition, no overlap
        merged = tmp_path / f"merged{count}"
        outcome = merge_shards(shards, merged, config(data, merged))
        assert outcome.ok and essentials(merged) == expected, f"{count} shards changed the results"
        info = json.loads((merged / "run.json").read_text())
        assert len(info["shards"]) == count and info["seed"] == 11
    # merging twice (or a shard listed twice) changes nothing: dedupe by sample id
    again = tmp_path / "merged-again"
    merge_shards([tmp_path / "n2" / "s0", tmp_path / "n2" / "s1", tmp_path / "n2" / "s0"], again, config(data, again))
    assert essentials(again) == expected


def test_merge_refuses_shards_of_different_runs(toys, tmp_path):
    data = make_images(tmp_path / "data", 4)
    run_eval(config(data, tmp_path / "a", shard=ShardSpec(0, 2)))
    run_eval(config(data, tmp_path / "b", shard=ShardSpec(1, 2), seed=12))
    with pytest.raises(ConfigError, match="cannot merge: seed"):
        merge_shards([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    run_eval(config(data, tmp_path / "c", shard=ShardSpec(1, 2), model_args={"size": 16}))
    with pytest.raises(ConfigError, match="cannot merge: model_args"):
        merge_shards([tmp_path / "a", tmp_path / "c"], tmp_path / "m")
    with pytest.raises(ConfigError, match="not a run directory"):
        merge_shards([tmp_path / "a", tmp_path / "data"], tmp_path / "m")


@pytest.mark.slow
def test_shard_cli_and_merge_cli(toys, tmp_path):
    data = make_images(tmp_path / "data", 5)
    common = ["--model", "mock", "--data", str(data), "--metrics", "toy-pair", "--model-arg", "size=32", "--seed", "11", "--no-progress"]
    runs = [
        subprocess.Popen([sys.executable, str(LAUNCHER), "eval", *common, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}")],
                         env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for proc in runs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    merged = subprocess.run([sys.executable, str(LAUNCHER), "merge", str(tmp_path / "s0"), str(tmp_path / "s1"),
                             "--out", str(tmp_path / "m"), "--no-progress"], env=cli_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert merged.returncode == 0, merged.stderr
    run_eval(config(data, tmp_path / "single", metrics=["toy-pair"]))
    assert essentials(tmp_path / "m") == essentials(tmp_path / "single")


@pytest.mark.slow
def test_torchrun_two_cpu_processes_equal_single_process(tmp_path):
    """Acceptance 4: torchrun --nproc_per_node=2 (gloo) merges to the single-process result."""
    data = make_images(tmp_path / "data", 7)
    common = ["--model", "mock", "--data", str(data), "--metrics", "toy-pair,toy-embed", "--model-arg", "size=32",
              "--seed", "5", "--no-progress", "--batch-size", "3"]
    env = cli_env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    launched = torchrun_eval([*common, "--out", str(tmp_path / "dist")], tmp_path)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    shards = sorted(p.name for p in (tmp_path / "dist" / "shards").iterdir())
    assert shards == ["shard-00000-of-00002", "shard-00001-of-00002"]
    assert all(read_captions(tmp_path / "dist" / "shards" / name) for name in shards)  # both ranks worked
    single = subprocess.run([sys.executable, str(LAUNCHER), "eval", *common, "--out", str(tmp_path / "single")],
                            env=env, capture_output=True, text=True, timeout=180)
    assert single.returncode == 0, single.stderr
    assert essentials(tmp_path / "dist") == essentials(tmp_path / "single")
    info = json.loads((tmp_path / "dist" / "results.json").read_text())["run"]
    assert len(info["runner"]["shards"]) == 2


def _accelerate(tmp_path, *launch_args):
    accelerate = VENV_BIN / "accelerate"
    if not accelerate.exists():
        pytest.skip("accelerate is not installed")
    env = cli_env(tmp_path)
    env.update({"OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")})  # no user accelerate config
    data = make_images(tmp_path / "data", 7)
    common = ["--model", "mock", "--data", str(data), "--metrics", "toy-pair,toy-embed", "--model-arg", "size=32",
              "--seed", "5", "--no-progress", "--batch-size", "3"]
    launched = subprocess.run(
        [str(accelerate), "launch", *launch_args, "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", "0", str(LAUNCHER), "eval", *common, "--out", str(tmp_path / "dist")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    return launched, common, env


@pytest.mark.slow
def test_accelerate_two_cpu_processes_equal_single_process(tmp_path):
    """Acceptance 6: `accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine
    (accelerate's torchrun path) runs two shards whose merge equals the single-process run."""
    launched, common, env = _accelerate(tmp_path, "--multi_gpu", "--num_processes", "2")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    shards = sorted(p.name for p in (tmp_path / "dist" / "shards").iterdir())
    assert shards == ["shard-00000-of-00002", "shard-00001-of-00002"]
    sizes = sorted(len(read_captions(tmp_path / "dist" / "shards" / name)) for name in shards)
    assert sizes == [3, 4]  # both ranks worked, an even deal
    single = subprocess.run([sys.executable, str(LAUNCHER), "eval", *common, "--out", str(tmp_path / "single")],
                            env=env, capture_output=True, text=True, timeout=180)
    assert single.returncode == 0, single.stderr
    assert essentials(tmp_path / "dist") == essentials(tmp_path / "single")
    info = json.loads((tmp_path / "dist" / "results.json").read_text())["run"]
    assert len(info["runner"]["shards"]) == 2


@pytest.mark.slow
def test_accelerate_cpu_launch_that_starts_one_process_fails_in_one_line(tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts one process without a rank (accelerate
    needs mpirun for several CPU processes): the runner refuses instead of running alone."""
    launched, _, _ = _accelerate(tmp_path, "--cpu", "--num_processes", "2")
    assert launched.returncode != 0
    # the runner's one line (accelerate then repeats the child's stderr in its own traceback)
    (line,) = [ln for ln in launched.stderr.splitlines() if ln.startswith("error: accelerate launch was asked")]
    assert "--multi_gpu" in line and "torchrun --nproc_per_node" in line
    assert "unified_bench" not in launched.stderr  # no runner traceback
    assert not (tmp_path / "dist" / "captions.jsonl").exists()


@pytest.mark.slow
def test_slurm_tasks_without_rendezvous_merge_on_rank0(tmp_path):
    """srun without MASTER_ADDR: ranks meet through shard.done markers; rank 0 merges."""
    data = make_images(tmp_path / "data", 6)
    out = tmp_path / "slurm"
    procs = []
    for rank in range(2):
        env = cli_env(tmp_path)
        env.update({"SLURM_PROCID": str(rank), "SLURM_NTASKS": "2", "SLURM_LOCALID": str(rank)})
        procs.append(subprocess.Popen(
            [sys.executable, str(LAUNCHER), "eval", "--model", "mock", "--data", str(data), "--metrics", "toy-pair",
             "--model-arg", "size=32", "--seed", "2", "--no-progress", "--out", str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    assert (out / "results.json").is_file()  # written by rank 0 only
    merged = read_captions(out)
    assert len(merged) == 6
    for rank in range(2):
        shard = out / "shards" / ShardSpec(rank, 2).label
        assert (shard / "shard.done").is_file()
        assert set(read_captions(shard)) == set(ShardSpec(rank, 2).select(list(merged)))


def test_merge_reports_samples_a_shard_never_reached(toys, tmp_path):
    data = make_images(tmp_path / "data", 6)
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for index, shard_dir in enumerate(shards):
        run_eval(config(data, shard_dir, shard=ShardSpec(index, 2)))
    # as if shard 1 had been killed before its last sample
    lines = (shards[1] / "captions.jsonl").read_text().splitlines(keepends=True)
    lost = json.loads(lines[-1])["sample_id"]
    (shards[1] / "captions.jsonl").write_text("".join(lines[:-1]))
    outcome = merge_shards(shards, tmp_path / "m", config(data, tmp_path / "m"))
    assert not outcome.ok
    assert [(e.sample_id, e.stage) for e in outcome.errors] == [(lost, "missing")]
    assert "resume that shard" in outcome.errors[0].message
    results = json.loads((tmp_path / "m" / "results.json").read_text())
    assert [(e["sample_id"], e["stage"]) for e in results["errors"]] == [(lost, "missing")]
    assert len(results["samples"]) == 5


def test_resume_and_merge_refuse_another_deal(toys, tmp_path):
    """The deal depends on the whole id list: a shard resumed or merged with another list would
    own other samples, so both are refused; a shard left out of a merge is named."""
    data = make_images(tmp_path / "data", 6)
    run_eval(config(data, tmp_path / "a", shard=ShardSpec(0, 2), limit=4))
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["shard"]["index"] == 0 and info["shard"]["count"] == 2 and info["shard"]["samples"] == 4
    with pytest.raises(ConfigError, match="cannot resume, shard 0/2 of 6 samples differs"):
        run_eval(config(data, tmp_path / "a", shard=ShardSpec(0, 2), resume=True))
    run_eval(config(data, tmp_path / "a", shard=ShardSpec(0, 2), limit=4, resume=True))  # the same deal resumes
    run_eval(config(data, tmp_path / "b", shard=ShardSpec(1, 2)))
    with pytest.raises(ConfigError, match="cannot merge: .* samples_?"):
        merge_shards([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    run_eval(config(data, tmp_path / "c", shard=ShardSpec(1, 3)))
    run_eval(config(data, tmp_path / "d", shard=ShardSpec(0, 2)))
    with pytest.raises(ConfigError, match="count differs"):
        merge_shards([tmp_path / "d", tmp_path / "c"], tmp_path / "m")
    messages = []

    class Recorder:
        def print(self, text, *args, **kwargs):
            messages.append(str(text))

    merge_shards([tmp_path / "d"], tmp_path / "m1", config(data, tmp_path / "m1"), console=Recorder())
    assert any("merged without shard(s) 1/2" in m for m in messages)


def test_trip_seed_keeps_cycle_one_of_the_image_trip_and_separates_the_rest():
    from unified_bench.core.seeds import seed_for, trip_seed

    assert trip_seed(7, "a") == seed_for(7, "a") == trip_seed(7, "a", "image", 1)
    seeds = {trip_seed(7, "a", trip, cycle) for trip in ("image", "text") for cycle in (1, 2, 3)}
    assert len(seeds) == 6  # each (trip, cycle) its own seed
    assert trip_seed(7, "a", "text", 2) == trip_seed(7, "a", "text", 2)
    assert trip_seed(7, "a", "text", 2) != trip_seed(8, "a", "text", 2)
    with pytest.raises(ValueError):
        trip_seed(7, "a", "image", 0)
