"""Data-parallel sharding: which samples this process owns and how ranks meet at the end.

Launchers are detected from the environment: torchrun and ``accelerate launch`` set
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``); SLURM's
``srun`` sets ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``. Samples go to shards by
a hash of their id (:func:`~unified_bench.core.protocol.shard_of`), never by position,
so a sample's shard does not depend on the dataset order or ``--limit``.

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

from unified_bench.core.errors import ConfigError
from unified_bench.core.seeds import shard_of

#: Seconds rank 0 waits for the other ranks (the slowest shard's lag behind the fastest).
BARRIER_TIMEOUT_S = float(os.environ.get("UNIFIED_BENCH_BARRIER_TIMEOUT_S", 24 * 3600))


@dataclass(frozen=True)
class ShardSpec:
    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: need 0 <= I < N")

    def owns(self, sample_id: str) -> bool:
        return shard_of(sample_id, self.count) == self.index

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
    launcher: str  # "torchrun" | "slurm"
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


def detect_process_group(env: Mapping[str, str] | None = None) -> ProcessGroup | None:
    """The launch this process is part of, or None for a single process."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        world = int(env["WORLD_SIZE"])
        if world > 1:
            return ProcessGroup(
                int(env["RANK"]),
                world,
                int(env.get("LOCAL_RANK", env["RANK"])),
                "torchrun",
                bool(env.get("MASTER_ADDR") and env.get("MASTER_PORT")),
            )
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


def select(sample_ids: Sequence[str], shard: ShardSpec | None) -> list[str]:
    return [s for s in sample_ids if shard is None or shard.owns(s)]


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
