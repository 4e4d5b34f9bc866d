"""What ``unified-bench eval`` takes (``EvalConfig``) and what a run gives back (``EvalOutcome``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unified_bench.core.protocol import PAPER_PROTOCOL, Protocol
from unified_bench.results.model import SampleError
from unified_bench.results.record import RunInfo
from unified_bench.runner.distributed import ShardSpec
from unified_bench.scoring import ScoreOutcome, ScoringConfig
from unified_bench.scoring.keys import TRIPS  # ``--trip``: image (the paper's protocol) or text

#: run.json keys that must agree between a run and its resumption (or between shards).
IDENTITY_KEYS = RunInfo.IDENTITY



@dataclass
class EvalConfig:
    """Everything ``unified-bench eval`` takes; every field maps to one flag."""

    model: str
    data: str
    out: Path
    model_args: dict[str, Any] = field(default_factory=dict)
    data_args: dict[str, str] = field(default_factory=dict)
    metrics: Sequence[str] | None = None  # None -> the dataset's defaults
    seed: int = 0
    limit: int | None = None
    batch_size: int = 1
    shard: ShardSpec | None = None  # --shard I/N (no process group)
    resume: bool = False
    size: tuple[int, int] | None = None  # generation size; None -> adapter native, else protocol
    protocol: Protocol = PAPER_PROTOCOL
    #: how the run is scored: everything `unified-bench score` takes but the metric list, which
    #: is ``metrics`` above (or the dataset's defaults); ``cache_dir`` also holds downloaded sets
    scoring: ScoringConfig = field(default_factory=lambda: ScoringConfig(metrics=()))
    score: bool = True
    #: where the evaluated checkpoint came from (a ``TrainingRecord`` as a dict: trainer,
    #: checkpoint, curve_csv relative to ``out``), set by a trainer's evaluator; not an identity
    #: setting, so a resumed run may learn it later
    training: dict[str, Any] | None = None
    #: ``--captions-from RUN_DIR``: take each sample's caption from that earlier run instead of
    #: calling the adapter's captioner (several generators compared on one captioner's captions);
    #: an identity setting, recorded as the run's ``captions_from``
    captions_from: Path | None = None
    #: ``--trip``: which round trip each sample makes (see :data:`TRIPS`); an identity setting
    trip: str = "image"
    #: ``--cycles``: how many times the round trip is chained (cycle k starts from cycle k-1's
    #: output); not an identity setting, so a finished run can be extended with ``--resume``
    cycles: int = 1
    # plumbing
    progress: bool = True
    durable: bool = True  # fsync every image and line (off only for benchmarks of the alternative)
    command: str | None = None
    #: the run's display label (``--name``), shown by the leaderboard instead of the model name;
    #: not an identity setting, so a resumed run may be renamed (None keeps the earlier name)
    name: str | None = None


@dataclass
class EvalOutcome:
    out_dir: Path
    finished: int
    errors: list[SampleError]
    score: ScoreOutcome | None = None
    role: str = "single"  # "single" | "shard" | "rank" | "merger"
    timings: dict[str, float] = field(default_factory=dict)
    #: why the run stopped before its last sample (its model server stopped answering); the
    #: finished samples are kept and ``--resume`` continues. None: it ran every sample.
    stopped: str | None = None
    #: finished samples found altered on resume and regenerated, by id
    healed: list[str] = field(default_factory=list)
    #: a run of several cycles: each cycle's own outcome, cycle 1 first (the fields above are
    #: cycle 1's, but ``errors`` and ``stopped`` cover every cycle); empty for one cycle
    cycles: list[EvalOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.stopped is None and not self.errors and (self.score is None or self.score.ok)


def check_trip(trip: str, cycles: int, captions_from: Path | None = None) -> None:
    """``--trip`` and ``--cycles`` as given; raises a ConfigError that says the fix."""
    from unified_bench.core.errors import ConfigError

    if trip not in TRIPS:
        raise ConfigError(f"--trip must be one of {', '.join(TRIPS)}, got {trip!r}")
    if not isinstance(cycles, int) or cycles < 1:
        raise ConfigError(f"--cycles must be a whole number >= 1, got {cycles!r}")
    if captions_from is not None and (trip != "image" or cycles != 1):
        raise ConfigError(
            "--captions-from replaces the captioner of a one-cycle image trip; drop it, or use --trip image --cycles 1"
        )


