"""Per-sample seeds and shard ownership.

A sample's seed is a pure function of (global seed, sample id), never of batch position,
batch size, shard count or rank, so batching and sharding cannot change results.

Shard ownership is dealt, not hashed per id: the dataset's sample ids are put in one stable
order (by a hash of each id, so neighbouring ids spread over the shards) and dealt
round-robin, so shard sizes differ by at most one for any sample and shard count (hashing
each id alone gave 6/2/0 for 8 samples over 3 shards). Every rank loads the same dataset,
so every rank deals the same hand without talking to the others, and the order the
dataset lists its samples in does not matter; only the set of ids does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def seed_for(global_seed: int, sample_id: str) -> int:
    """The seed of one sample: a pure function of (global seed, sample id) in [0, 2**31).

    It never depends on batch position, batch size, shard or rank, so batching and sharding
    cannot change results. 2**31 keeps it valid for every framework's generator.
    """
    digest = hashlib.sha256(f"{int(global_seed)}\x00{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def trip_seed(global_seed: int, sample_id: str, trip: str = "image", cycle: int = 1) -> int:
    """The seed of one sample in one cycle of one trip: a pure function of (global seed,
    sample id, trip, cycle). Cycle 1 of the image trip is :func:`seed_for`, so a run with
    several cycles contains the one-cycle run byte for byte."""
    if cycle < 1:
        raise ValueError(f"cycle must be >= 1, got {cycle}")
    if trip == "image" and cycle == 1:
        return seed_for(global_seed, sample_id)
    digest = hashlib.sha256(f"{int(global_seed)}\x00{sample_id}\x00{trip}\x00{int(cycle)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def _deal_key(sample_id: str) -> tuple[bytes, str]:
    return hashlib.sha256(f"shard\x00{sample_id}".encode()).digest(), sample_id


def deal_order(sample_ids: Iterable[str]) -> list[str]:
    """The distinct ``sample_ids`` in dealing order (by SHA-256 of the id, then the id)."""
    return sorted(dict.fromkeys(sample_ids), key=_deal_key)


def shard_assignment(sample_ids: Iterable[str], num_shards: int) -> dict[str, int]:
    """Which of ``num_shards`` shards owns each of ``sample_ids``: dealt round-robin in
    :func:`deal_order`, so shard sizes differ by at most one. Depends on the set of ids
    only (not their order or duplicates)."""
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    return {sid: i % num_shards for i, sid in enumerate(deal_order(sample_ids))}


def shard_of(sample_id: str, num_shards: int, sample_ids: Iterable[str]) -> int:
    """Which of ``num_shards`` shards owns ``sample_id`` when ``sample_ids`` (the whole
    dataset, which must contain it) is dealt over them."""
    owners = shard_assignment(sample_ids, num_shards)
    if sample_id not in owners:
        raise KeyError(f"{sample_id!r} is not among the sample ids dealt")
    return owners[sample_id]


def sample_ids_sha256(sample_ids: Iterable[str]) -> str:
    """SHA-256 of the sorted distinct ids: names the list a shard layout was dealt from."""
    digest = hashlib.sha256()
    for sid in sorted(set(sample_ids)):
        digest.update(sid.encode() + b"\x00")
    return digest.hexdigest()
