"""Verification before ranking: may a run be ranked on a track?

A run is *verified* on a track only when every check passes; each failed check is one reason
string, shown on its row, its model page and in ``leaderboard.json``:

- **metric weights**: every track metric's recorded checkpoint is the track's (and its
  revision, where the track pins one); a local path counts only when its recorded weights
  SHA-256 is one the track pins;
- **dataset**: the run's fingerprint (``DatasetRecord.fingerprint``: one SHA-256 over the sorted
  sample ids and reference hashes) equals the track's pinned fingerprint; with nothing pinned
  the check cannot pass ("dataset not verified (no pinned fingerprint)");
- **samples**: the run covers the set's sample count with no failed sample or metric;
- **protocol**: the executed protocol matches the track's (:func:`tracks.check_run`).

Pure functions of the typed run record; nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from unified_bench.leaderboard.tracks import Track, check_run
from unified_bench.results.record import RunRecord

VERIFIED = "verified"
UNVERIFIED = "unverified"
REPORTED = "reported"
NO_PINNED_FINGERPRINT = "dataset not verified (no pinned fingerprint)"


@dataclass(frozen=True)
class Verification:
    status: str  # verified / unverified
    reasons: tuple[str, ...]
    fingerprint: str | None  # the run's dataset fingerprint, None when it cannot be computed

    @property
    def verified(self) -> bool:
        return self.status == VERIFIED


def _hash(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().lower()
    return value[len("sha256:") :] if value.startswith("sha256:") else value


def _short(value: str | None, limit: int = 16) -> str:
    if value is None:
        return "none"
    return value if len(value) <= limit else value[:limit] + "…"


def check_weights(record: RunRecord, track: Track) -> list[str]:
    """One reason per track metric whose recorded weights are not the track's."""
    reasons = []
    for metric in track.metrics:
        pin = track.weights_pin(metric)
        recorded = record.metric(metric)
        if pin.checkpoint is None:
            continue  # a metric without weights (ssim, psnr)
        if recorded is None:
            reasons.append(f"metric weights: {metric}: not recorded in the run (track: {pin.checkpoint})")
            continue
        revision = _hash(recorded.revision)
        if pin.sha256 and revision is not None and revision in {_hash(h) for h in pin.sha256}:
            continue  # the pinned weights, wherever they were loaded from
        if recorded.checkpoint != pin.checkpoint:
            why = "a local path counts only when its weights' SHA-256 is pinned"
            if pin.sha256:
                why = f"weights {_short(recorded.revision, 23)} are not the pinned SHA-256"
            reasons.append(
                f"metric weights: {metric} checkpoint {recorded.checkpoint or 'not recorded'} is not the "
                f"track's {pin.checkpoint} ({why})"
            )
        elif pin.revision is not None and revision != _hash(pin.revision):
            reasons.append(
                f"metric weights: {metric} revision {_short(recorded.revision, 23)} is not the track's "
                f"{_short(pin.revision, 23)}"
            )
    return reasons


def check_dataset(record: RunRecord, track: Track) -> tuple[list[str], str | None]:
    """The dataset fingerprint against the track's pin: (reasons, the run's fingerprint)."""
    fingerprint = record.dataset.fingerprint() if record.dataset is not None else None
    pinned = track.pinned_fingerprint()
    if fingerprint is None:
        return ["dataset: fingerprint not computable (reference hashes not recorded for every sample)"], None
    if pinned is None:
        return [NO_PINNED_FINGERPRINT], fingerprint
    if fingerprint != pinned:
        return [f"dataset: fingerprint {_short(fingerprint)} is not the track's pinned {_short(pinned)}"], fingerprint
    return [], fingerprint


def check_samples(record: RunRecord, track: Track, errors: int = 0) -> list[str]:
    """The set's sample count, every sample finished, no failed sample or metric."""
    reasons = []
    size = track.pinned_size()
    hashes = record.dataset.reference_sha256 if record.dataset is not None else None
    count = len(hashes) if hashes else None
    if size is not None and count != size:
        reasons.append(f"samples: {count if count is not None else 'unknown'} recorded, the set has {size}")
    runner = record.runner
    failed = runner.failed if runner is not None else None
    if failed:
        reasons.append(f"samples: {failed} failed")
    if runner is not None and runner.finished is not None and size is not None and runner.finished != size:
        if count == size:  # otherwise already said
            reasons.append(f"samples: {runner.finished} finished, the set has {size}")
    failures = (record.scoring.metric_failures if record.scoring is not None else None) or []
    if failures:
        names = sorted({str(f.get("metric", "?")) for f in failures if isinstance(f, Mapping)})
        reasons.append(f"metrics failed: {', '.join(names) or len(failures)}")
    if errors and not failed and not failures:
        reasons.append(f"errors: {errors} recorded in results.json")
    return reasons


def check_protocol_reasons(record: RunRecord, track: Track) -> list[str]:
    check = check_run(record, track)
    if check.status == "match":
        return []
    if check.status == "differs":
        return [f"protocol differs: {'; '.join(check.differences)}"]
    return [f"protocol not fully recorded: {', '.join(check.unrecorded)}"]


def verify_run(record: RunRecord, track: Track, *, errors: int = 0) -> Verification:
    """Every check for one run on one track; ``errors``: the results file's error count."""
    dataset_reasons, fingerprint = check_dataset(record, track)
    reasons = (
        check_weights(record, track)
        + dataset_reasons
        + check_samples(record, track, errors)
        + check_protocol_reasons(record, track)
    )
    return Verification(UNVERIFIED if reasons else VERIFIED, tuple(reasons), fingerprint)


def fingerprint_conflicts(fingerprints: Mapping[str, str | None], track: Track) -> dict[str, str]:
    """While a track pins no fingerprint: run id -> a flag for every run whose fingerprint differs
    from another run's on the track (the runs cannot all be on the same images)."""
    if track.pinned_fingerprint() is not None:
        return {}
    distinct = sorted({f for f in fingerprints.values() if f is not None})
    if len(distinct) < 2:
        return {}
    counts = {f: sum(1 for v in fingerprints.values() if v == f) for f in distinct}
    return {
        run_id: (
            f"dataset: fingerprint {_short(f)} differs from other rows on this track "
            f"({len(distinct)} different fingerprints; {counts[f]} run(s) share this one)"
        )
        for run_id, f in sorted(fingerprints.items())
        if f is not None
    }
