"""The run record: what ran, typed.

``RunRecord`` is the ``run`` block of ``results.json``; ``RunInfo`` is a run directory's
``run.json`` (the runner's identity and progress file). Both are dataclasses with
``from_dict``/``to_dict`` and are validated against ``schema.json`` when read. Reading is
lossless: a key this version does not know is kept in ``extra``, a known key that an older
file lacks stays absent, so ``to_dict(from_dict(d)) == d`` for every file ever written and
``from_dict(to_dict(x)) == x`` for every record.

Record versions: 1 (no ``record_version`` key) recorded only the requested protocol;
2 adds ``protocol_executed``, the settings the adapter reported for the calls it ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from unified_bench.core.errors import ResultsValidationError
from unified_bench.core.protocol import ExecutedProtocol, protocol_deviations

RECORD_VERSION = 2


@dataclass
class _Part:
    """Lossless base: unknown keys in ``extra``, known keys missing from the source in ``absent``."""

    extra: dict[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = field(default=frozenset(), repr=False)

    #: field name -> record class (a nested record) or [record class] (a list of them)
    nested: ClassVar[dict[str, Any]] = {}
    _BOOKKEEPING: ClassVar[tuple[str, ...]] = ("extra", "absent")

    @classmethod
    def _names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name not in cls._BOOKKEEPING]

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "run") -> Any:
        if not isinstance(data, dict):
            raise ResultsValidationError(f"{where}: expected an object, got {type(data).__name__}")
        names = cls._names()
        values: dict[str, Any] = {}
        for name in names:
            if name not in data:
                continue
            value = data[name]
            kind = cls.nested.get(name)
            if value is not None and kind is not None:
                if isinstance(kind, list):
                    if not isinstance(value, list):
                        raise ResultsValidationError(f"{where}.{name}: expected a list, got {type(value).__name__}")
                    value = [kind[0].from_dict(v, where=f"{where}.{name}[{i}]") for i, v in enumerate(value)]
                else:
                    value = kind.from_dict(value, where=f"{where}.{name}")
            values[name] = value
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**values, extra=extra, absent=frozenset(n for n in names if n not in data))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self._names():
            if name in self.absent:
                continue
            value = getattr(self, name)
            if isinstance(value, list) and isinstance(self.nested.get(name), list):
                value = [v.to_dict() for v in value]
            elif isinstance(value, (_Part, ExecutedProtocol)):
                value = value.to_dict()
            out[name] = value
        out.update(self.extra)
        return out


@dataclass
class _Executed(_Part):
    """``ExecutedProtocol`` read losslessly (the protocol type itself is strict and frozen)."""

    caption: dict[str, Any] | None = None
    generation: dict[str, Any] | None = None
    varied: list[str] = field(default_factory=list)

    def protocol(self) -> ExecutedProtocol:
        return ExecutedProtocol.from_dict({"caption": self.caption, "generation": self.generation, "varied": self.varied})


@dataclass
class AdapterRecord(_Part):
    name: str | None = None
    target: str | None = None
    source: str | None = None  # builtin, decorator, plugin:<dist>, file:<path>, module:<module>, instance
    describe: dict[str, Any] = field(default_factory=dict)
    capabilities: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None  # the adapter file's SHA-256 (``--model path/to/file.py:Class`` only)
    #: ``Adapter.output_identity()``: what decides the outputs beyond the arguments (a served
    #: model); a resumed run must report the same. Absent: the adapter reports nothing.
    output_identity: dict[str, Any] | None = None


@dataclass
class ModelRecord(_Part):
    name: str | None = None
    args: dict[str, Any] | None = None
    adapter: AdapterRecord | None = None
    nested: ClassVar[dict[str, Any]] = {"adapter": AdapterRecord}


@dataclass
class MetricRecord(_Part):
    """One metric as loaded: its weights (hub id or path) and their revision or hash."""

    name: str = ""
    kind: str = ""
    checkpoint: str | None = None
    revision: str | None = None
    preprocessing: dict[str, Any] | None = None
    dtype: str | None = None


@dataclass
class DatasetRecord(_Part):
    name: str | None = None
    description: str | None = None
    source: Any = None
    default_metrics: list[str] | None = None
    samples: int | None = None
    reference_sha256: dict[str, str | None] | None = None

    def fingerprint(self) -> str | None:
        """The set's fingerprint (:func:`dataset_fingerprint`) from the recorded reference hashes."""
        return dataset_fingerprint(self.reference_sha256 or {})


def dataset_fingerprint(reference_sha256: Mapping[str, str | None]) -> str | None:
    """One SHA-256 over the sorted (sample id, reference SHA-256) pairs of a set.

    Each pair is hashed as ``"<sample id>\t<sha256 hex>\n"`` in plain string order of the ids.
    None when the set is empty or a reference hash is missing (the fingerprint would not pin the
    images). ``unified-bench dataset pin`` and the leaderboard's dataset check both use this.
    """
    if not reference_sha256 or any(not isinstance(v, str) or not v for v in reference_sha256.values()):
        return None
    digest = hashlib.sha256()
    for sample_id, sha in sorted(reference_sha256.items()):
        digest.update(f"{sample_id}\t{sha.lower()}\n".encode("utf-8"))
    return digest.hexdigest()


@dataclass
class SeedsRecord(_Part):
    global_seed: int | None = None
    derivation: str | None = None
    per_sample: dict[str, int] | None = None


@dataclass
class RunnerRecord(_Part):
    batch_size: int | None = None
    limit: int | None = None
    shards: Any = None
    finished: int | None = None
    failed: int | None = None
    #: set only on a run that stopped early (its server stopped answering): True, why, and how
    #: many of its samples never ran; ``--resume`` completes it and drops these keys
    incomplete: bool | None = None
    stopped: str | None = None
    not_run: int | None = None


@dataclass
class ScoringRecord(_Part):
    metrics_requested: list[str] | None = None
    checkpoint_overrides: dict[str, str] | None = None
    batch_size: int | None = None
    dtype: str | None = None
    metric_failures: list[dict[str, Any]] | None = None


@dataclass
class TrainingRecord(_Part):
    """Where a reference-trainer checkpoint came from, and its curves (embedded or a CSV)."""

    trainer: str | None = None
    checkpoint: str | None = None
    curve_csv: str | None = None
    curve: dict[str, Any] | None = None
    #: what the trainer's committed evidence says of this checkpoint's stage (e.g. whether its
    #: gain holds across training seeds), shown with the run on the leaderboard
    note: str | None = None


@dataclass
class RunRecord(_Part):
    """The ``run`` block of ``results.json``."""

    record_version: int = RECORD_VERSION
    run_id: str = ""
    name: str | None = None  # the display label (``--name``); absent: the model's name is shown
    created: str = ""
    command: str = ""
    package_versions: dict[str, str | None] = field(default_factory=dict)
    git_commit: str | None = None
    device: str | None = None
    hardware: dict[str, Any] = field(default_factory=dict)
    metrics: list[MetricRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    model: ModelRecord | None = None
    protocol: dict[str, Any] | None = None  # requested: a ``Protocol`` as a dict
    protocol_executed: _Executed | None = None
    dataset: DatasetRecord | None = None
    seeds: SeedsRecord | None = None
    runner: RunnerRecord | None = None
    scoring: ScoringRecord | None = None
    training: TrainingRecord | None = None
    #: where the captions came from when they were not made in this run (``eval
    #: --captions-from``): {"run": path, "run_id": ..., "captions_sha256": ...}; absent otherwise
    captions_from: dict[str, Any] | None = None

    nested: ClassVar[dict[str, Any]] = {
        "metrics": [MetricRecord],
        "model": ModelRecord,
        "protocol_executed": _Executed,
        "dataset": DatasetRecord,
        "seeds": SeedsRecord,
        "runner": RunnerRecord,
        "scoring": ScoringRecord,
        "training": TrainingRecord,
    }

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "run") -> RunRecord:
        record = super().from_dict(data, where=where)
        if "record_version" in record.absent:
            record.record_version = 1  # written before the executed protocol was recorded
        return record

    @property
    def version(self) -> int:
        return self.record_version

    def executed(self) -> ExecutedProtocol | None:
        """The executed protocol; None for a record that predates it or a run without adapter."""
        return self.protocol_executed.protocol() if self.protocol_executed is not None else None

    def deviations(self, expected: dict[str, Any]) -> list:
        """Where what ran differs from ``expected`` (a protocol dict); see ``protocol_deviations``."""
        executed = self.protocol_executed.to_dict() if self.protocol_executed is not None else None
        return protocol_deviations(expected, executed)

    def metric(self, name: str) -> MetricRecord | None:
        return next((m for m in self.metrics if m.name == name), None)


@dataclass
class InvocationRecord(_Part):
    """One ``eval`` (or ``--resume``) session on a run directory: where it ran, the transport
    arguments it used (those that change how outputs are fetched, not what they are), how
    many finished samples it found altered and regenerated, and why it stopped early."""

    started: str | None = None
    host: str | None = None
    pid: int | None = None
    command: str | None = None
    transport: dict[str, Any] = field(default_factory=dict)
    healed: int = 0
    stopped: str | None = None


@dataclass
class RunInfo(_Part):
    """A run directory's ``run.json``: the identity a resume must match, and progress."""

    model: str | None = None
    model_args: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    seed: int | None = None
    name: str | None = None  # the display label (``--name``); not an identity setting
    dataset: str | None = None
    adapter: AdapterRecord | None = None
    dataset_info: DatasetRecord | None = None
    shard: dict[str, Any] | None = None
    owned_samples: list[str] | None = None
    metrics: list[str] | None = None
    processed_this_session: int | None = None
    executed: _Executed | None = None
    training: TrainingRecord | None = None
    batch_size: int | None = None
    limit: int | None = None
    shards: Any = None
    timings: dict[str, float] | None = None
    #: ``eval --captions-from``: the run whose captions were regenerated from (see RunRecord)
    captions_from: dict[str, Any] | None = None
    #: every session that ran on this directory, oldest first (absent in older run files)
    invocations: list[InvocationRecord] = field(default_factory=list)
    #: ``--trip``: "text" (prompt -> image -> caption); absent on the image trip, so a default
    #: run's file is what it always was. An identity setting: a resume must use the same trip
    trip: str | None = None
    #: which cycle this directory holds (absent: cycle 1, the run's root)
    cycle: int | None = None
    #: in the run's root: the cycles the last session asked for (absent: 1). Not an identity
    #: setting: ``--cycles 3 --resume`` on a finished two-cycle run runs only cycle 3
    cycles: int | None = None

    nested: ClassVar[dict[str, Any]] = {
        "adapter": AdapterRecord,
        "dataset_info": DatasetRecord,
        "executed": _Executed,
        "training": TrainingRecord,
        "invocations": [InvocationRecord],
    }

    #: the fields that must agree between a run and its resumption (or between shards)
    IDENTITY: ClassVar[tuple[str, ...]] = ("model", "model_args", "protocol", "seed", "dataset", "captions_from", "trip")

    #: the optional keys written only when set (a default run's file keeps its old keys)
    OPTIONAL_UNSET: ClassVar[tuple[str, ...]] = ("name", "captions_from", "trip", "cycle", "cycles")

    def unset_optional(self) -> frozenset[str]:
        """Those of :attr:`OPTIONAL_UNSET` that are None: leave them out of ``absent``-aware writes."""
        return frozenset(key for key in self.OPTIONAL_UNSET if getattr(self, key) is None)

    def identity(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.IDENTITY}

    @property
    def trip_name(self) -> str:
        """``trip`` with its default spelled out: "image" or "text"."""
        return self.trip or "image"

    def executed_protocol(self) -> ExecutedProtocol:
        return self.executed.protocol() if self.executed is not None else ExecutedProtocol()


def executed_record(protocol: ExecutedProtocol) -> _Executed:
    """The lossless record form of an executed protocol."""
    return _Executed.from_dict(protocol.to_dict())
