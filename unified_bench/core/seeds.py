"""Per-sample seeds and shard ownership: pure functions of the sample id, never of batch
position, batch size, shard count or rank, so batching and sharding cannot change results."""

from __future__ import annotations

import hashlib


def seed_for(global_seed: int, sample_id: str) -> int:
    """The seed of one sample: a pure function of (global seed, sample id) in [0, 2**31).

    It never depends on batch position, batch size, shard or rank, so batching and sharding
    cannot change results. 2**31 keeps it valid for every framework's generator.
    """
    digest = hashlib.sha256(f"{int(global_seed)}\x00{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def shard_of(sample_id: str, num_shards: int) -> int:
    """Which of ``num_shards`` shards owns ``sample_id`` (stable, independent of order)."""
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    digest = hashlib.sha256(f"shard\x00{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards
