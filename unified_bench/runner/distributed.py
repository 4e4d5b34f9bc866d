"""Data-parallel sharding: which samples this process owns and how ranks meet at the end.

Launchers are detected from the environment: torchrun and ``accelerate launch`` in its
multi-process mode set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (and ``MASTER_ADDR``/
``MASTER_PORT``); SLURM's ``srun`` sets ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``;
``mpirun`` (Open MPI, MPICH/Intel MPI, MVAPICH; ``accelerate launch --cpu
--mpirun_hostfile``) sets its own rank and size variables. ``accelerate launch
--num_processes N`` without ``--multi_gpu`` on a machine with fewer than N GPUs (``--cpu``
included) starts *one* process with ``MASTER_ADDR`` set and no rank: that, and any launch
whose world size cannot be read, is refused with one line rather than run as one shard. Samples are dealt to
shards round-robin in an order fixed by a hash of their ids
(:func:`~unified_bench.core.seeds.shard_assignment`), so shard sizes differ by at most one,
and every rank computes the same deal from the dataset it loaded, whatever order the
dataset lists its samples in. The deal depends on the whole id list (so on ``--limit``):
a shard records the list it was dealt from, and resume and merge refuse a different one.

At the end every rank writes its shard and rank 0 merges: after a ``torch.distributed``
barrier (gloo, so it works on CPU) when a rendezvous address is known, else after waiting
for every shard's ``shard.done`` marker on the shared file system.
"""

from __future__ import annotations

import datetime
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unified_bench.core.errors import ConfigError
from unified_bench.core.seeds import sample_ids_sha256, shard_assignment

#: Seconds rank 0 waits for the other ranks (the slowest shard's lag behind the fastest).
BARRIER_TIMEOUT_S = float(os.environ.get("UNIFIED_BENCH_BARRIER_TIMEOUT_S", 24 * 3600))


@dataclass(frozen=True)
class ShardSpec:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: need 0 <= I < N")

    def select(self, sample_ids: Sequence[str]) -> list[str]:
        """The ids this shard owns when ``sample_ids`` (the whole dataset) is dealt, in the
        order given."""
        owners = shard_assignment(sample_ids, self.count)
        return [s for s in sample_ids if owners[s] == self.index]

    def owns(self, sample_id: str, sample_ids: Sequence[str]) -> bool:
        """Whether this shard owns ``sample_id`` when ``sample_ids`` is dealt."""
        return shard_assignment(sample_ids, self.count).get(sample_id) == self.index

    def layout(self, sample_ids: Sequence[str]) -> dict[str, Any]:
        """The run record's ``shard``: this shard and the id list it was dealt from."""
        return {**self.to_dict(), "samples": len(set(sample_ids)), "sample_ids_sha256": sample_ids_sha256(sample_ids)}

    @property
    def label(self) -> str:
        return f"shard-{self.index:05d}-of-{self.count:05d}"

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a multi-process launch."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str  # "torchrun" | "accelerate" | "mpirun" | "slurm"
    rendezvous: bool  # MASTER_ADDR/PORT known -> torch.distributed barrier possible

    @property
    def shard(self) -> ShardSpec:
        return ShardSpec(self.rank, self.world_size)


def parse_shard(text: str) -> ShardSpec:
    """'1/4' -> ShardSpec(1, 4)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise ConfigError(f"--shard expects I/N (e.g. 0/4), got {text!r}")
    return ShardSpec(int(match.group(1)), int(match.group(2)))


#: (launcher, rank, size, local rank) variables of the MPI launchers, in the order tried
_MPI_VARS: tuple[tuple[str, str, str, str], ...] = (
    ("mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("mpirun", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("mpirun", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
)


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise ConfigError(f"cannot read the launch's world size: {key}={env[key]!r} is not an integer") from None


def detect_process_group(env: Mapping[str, str] | None = None) -> ProcessGroup | None:
    """The launch this process is part of, or None for a single process.

    Raises ConfigError (one line) for a multi-process launch whose rank or world size this
    process cannot read, rather than running the whole set as if it were alone.
    """
    env = os.environ if env is None else env
    rendezvous = bool(env.get("MASTER_ADDR") and env.get("MASTER_PORT"))
    if "WORLD_SIZE" in env or "RANK" in env:
        if not ("WORLD_SIZE" in env and "RANK" in env):
            have, lack = ("RANK", "WORLD_SIZE") if "RANK" in env else ("WORLD_SIZE", "RANK")
            raise ConfigError(f"cannot read the launch's world size: {have} is set but {lack} is not")
        world = _int(env, "WORLD_SIZE")
        if world > 1:
            launcher = "accelerate" if any(k.startswith("ACCELERATE_") for k in env) else "torchrun"
            rank = _int(env, "RANK")
            return ProcessGroup(rank, world, _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank, launcher, rendezvous)
        return None
    for launcher, rank_key, size_key, local_key in _MPI_VARS:
        if rank_key in env and size_key in env:
            world = _int(env, size_key)
            if world > 1:
                rank = _int(env, rank_key)
                return ProcessGroup(rank, world, _int(env, local_key) if local_key in env else 0, launcher, rendezvous)
            return None
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        world = int(env["SLURM_NTASKS"])
        if world > 1:
            return ProcessGroup(
                int(env["SLURM_PROCID"]),
                world,
                int(env.get("SLURM_LOCALID", 0)),
                "slurm",
                bool(env.get("MASTER_ADDR") and env.get("MASTER_PORT")),
            )
        return None
    if rendezvous and any(k.startswith("ACCELERATE_") for k in env):
        # accelerate sets MASTER_ADDR/PORT only when asked for several processes; without a
        # rank it started just this one (--cpu, or fewer GPUs than --num_processes)
        raise ConfigError(
            "accelerate launch was asked for several processes but started this one without RANK/WORLD_SIZE, "
            "so it would run alone; add --multi_gpu (it runs on CPU too), or use torchrun --nproc_per_node N, "
            "or --shard I/N"
        )
    return None


def select(sample_ids: Sequence[str], shard: ShardSpec | None) -> list[str]:
    return list(sample_ids) if shard is None else shard.select(sample_ids)


def wait_for_all(group: ProcessGroup, shard_dirs: Sequence[Path], done_marker: str) -> None:
    """Block until every rank has written its shard (rank 0 then merges)."""
    if group.rendezvous:
        _torch_barrier(group)
        return
    if group.rank != 0:
        return
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while True:
        missing = [d for d in shard_dirs if not (d / done_marker).exists()]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ConfigError(
                f"rank 0 waited {BARRIER_TIMEOUT_S:.0f} s for shards that never finished: "
                + ", ".join(str(d) for d in missing)
                + "; run `unified-bench merge` once they are done"
            )
        time.sleep(2.0)


def _torch_barrier(group: ProcessGroup) -> None:
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        os.environ.setdefault("RANK", str(group.rank))
        os.environ.setdefault("WORLD_SIZE", str(group.world_size))
        # gloo: the barrier carries no tensors worth a GPU, and works on CPU-only nodes
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=BARRIER_TIMEOUT_S))
        created = True
    try:
        dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()
