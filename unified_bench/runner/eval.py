"""The round trip: dataset -> caption -> generate -> run directory -> scoring.

``run_eval(EvalConfig(...))`` is ``unified-bench eval`` as a library call. The loop keeps
three promises:

- every finished sample is on disk (image, then its ``captions.jsonl`` line) before the
  next batch starts, and ``resume=True`` skips exactly those;
- a failure of the adapter on one sample (exception, wrong type, empty caption, bad image)
  fails that sample only: a batch that raises is retried one sample at a time;
- a sample's seed and therefore its outputs depend only on (global seed, sample id),
  not on batch size, shard count or resume history.

And three about the run as a whole: one process owns the run directory while it runs
(:class:`~unified_bench.core.run_lock.RunDirLock`); a model server that stops answering stops
the run, with its finished samples kept, instead of failing every remaining sample; and
``resume=True`` first verifies the finished samples against the hashes they were written
with and regenerates any that changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console

from unified_bench.adapters.base import Adapter, SampleOutcome, check_captions, check_images
from unified_bench.adapters.http import HttpError
from unified_bench.adapters.registry import AdapterSpec, instantiate, prepare, split_args
from unified_bench.datasets.base import EvalDataset, Sample, encode_reference, natural_key
from unified_bench.core.errors import ConfigError, ImageLoadError, ServerUnreachableError, UnifiedBenchError
from unified_bench.core.images import file_sha256, load_image
from unified_bench.core.progress import progress_bar
from unified_bench.core.run_lock import RunDirLock
from unified_bench.core.protocol import ExecutedCaption, ExecutedGeneration, ExecutedProtocol, check_settings
from unified_bench.core.seeds import trip_seed
from unified_bench.results.model import SampleError
from unified_bench.results.record import (
    AdapterRecord,
    DatasetRecord,
    InvocationRecord,
    RunInfo,
    TrainingRecord,
    executed_record,
)
from unified_bench.runner.config import IDENTITY_KEYS, EvalConfig, EvalOutcome, check_trip
from unified_bench.runner.distributed import ProcessGroup, ShardSpec, detect_process_group, wait_for_all
from unified_bench.runner.merge import merge_shards
from unified_bench.runner.score import score_run
from unified_bench.runner.store import (
    CAPTIONS_FILE,
    DONE_FILE,
    IMAGES_DIR,
    PREVIOUS_STAGE,
    CaptionRecord,
    ErrorRecord,
    RunState,
    RunStore,
    cycle_dir,
)

__all__ = ["EvalConfig", "EvalOutcome", "run_eval", "run_samples", "score_run"]


@dataclass
class _Item:
    """A sample moving through one batch."""

    sample: Sample
    seed: int
    reference: Path | None = None
    reference_sha256: str | None = None
    image: Image.Image | None = None
    caption: str | None = None
    output: Image.Image | None = None
    error: ErrorRecord | None = None
    unreachable: bool = False  # failed because the model's server could not be reached

    def fail(self, stage: str, message: str, *, unreachable: bool = False) -> None:
        self.error = ErrorRecord(self.sample.sample_id, stage, message, self.seed, self.reference_sha256)
        self.unreachable = unreachable

    @property
    def answered(self) -> bool:
        """The adapter (its server) answered for this sample, with an output or an error."""
        return self.error is None or (self.error.stage in ("caption", "generate") and not self.unreachable)


def run_eval(config: EvalConfig, *, adapter: Adapter | None = None, console: Console | None = None) -> EvalOutcome:
    """Run (or resume) one evaluation; under torchrun/SLURM, this rank's share of it.

    ``adapter``: an already-built adapter to use instead of building ``config.model``.
    """
    console = console or Console(stderr=True)
    from unified_bench.datasets.registry import load_eval_dataset

    check_trip(config.trip, config.cycles, config.captions_from)
    dataset = load_eval_dataset(config.data, config.data_args, cache_dir=config.scoring.cache_dir).limited(config.limit)
    check_dataset_for_trip(dataset, config.trip, config.data)
    group = detect_process_group()
    if group is not None and config.shard is not None:
        raise ConfigError("--shard cannot be combined with a torchrun/SLURM launch; the launch already shards")
    if group is not None:
        return _run_rank(config, dataset, group, adapter, console)
    with RunDirLock(Path(config.out), command=config.command, console=console):
        if config.shard is not None:
            outcome = run_samples(config, dataset, Path(config.out), config.shard, adapter, console)
            outcome.role = "shard"
            return outcome
        outcome = run_samples(config, dataset, Path(config.out), None, adapter, console)
        if config.score:  # a stopped run scores what it finished; results.json says it is incomplete
            outcome.score = score_run(Path(config.out), config, console=console)
        return outcome


def check_dataset_for_trip(dataset: EvalDataset, trip: str, data: str) -> None:
    """Refuse, before anything runs, a dataset none of whose samples can start ``trip``
    (a sample that cannot while others can is a per-sample error instead)."""
    if not dataset.samples:
        return
    if trip == "text" and all(s.prompt is None for s in dataset.samples):
        raise ConfigError(
            f"--data {data!r} has no prompts, and the text trip starts from a prompt: use a prompt set "
            "(--data prompts:FILE), or a dataset that gives each sample a prompt (see its --data-arg options)"
        )
    if trip == "image" and all(s.reference is None and s.image is None for s in dataset.samples):
        raise ConfigError(f"--data {data!r} has no images, and the image trip starts from one: add --trip text")


def _run_rank(
    config: EvalConfig, dataset: EvalDataset, group: ProcessGroup, adapter: Adapter | None, console: Console
) -> EvalOutcome:
    out = Path(config.out)
    if (out / "run.json").exists() and not config.resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    shard_dirs = [out / "shards" / ShardSpec(rank, group.world_size).label for rank in range(group.world_size)]
    mine = shard_dirs[group.rank]
    with RunDirLock(mine, command=config.command, console=console):  # before touching it: another launch may own it
        (mine / DONE_FILE).unlink(missing_ok=True)
        try:
            outcome = run_samples(config, dataset, mine, group.shard, adapter, console, local_rank=group.local_rank)
        except BaseException as err:
            # tell a waiting rank 0 not to wait for us; it merges what exists and reports the rest
            mine.mkdir(parents=True, exist_ok=True)
            (mine / DONE_FILE).write_text(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")
            raise
        done = {"finished": outcome.finished, "failed": len(outcome.errors)}
        if outcome.stopped is not None:
            done["stopped"] = outcome.stopped
        (mine / DONE_FILE).write_text(json.dumps(done) + "\n")
    outcome.role = "rank"
    wait_for_all(group, shard_dirs, DONE_FILE)
    if group.rank != 0:
        return outcome
    merged = merge_shards(shard_dirs, out, config, console=console)
    merged.role = "merger"
    merged.stopped = next(filter(None, (_read_done(d).get("stopped") for d in shard_dirs)), None)
    return merged


def _read_done(shard_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((shard_dir / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_samples(
    config: EvalConfig,
    dataset: EvalDataset,
    out: Path,
    shard: ShardSpec | None,
    adapter: Adapter | None,
    console: Console,
    *,
    local_rank: int | None = None,
) -> EvalOutcome:
    """Round-trip every owned, unfinished sample into ``out``, cycle after cycle (no
    scoring). The caller holds ``out``'s lock.

    Cycle 1 writes ``out`` itself (today's layout); cycle k > 1 writes ``out/cycles/<k>/``
    and starts from cycle k-1's outputs: its reconstructions (image trip) or its final
    captions (text trip). A sample that failed in cycle k-1 gets a ``previous`` error in
    cycle k instead of a run. The adapter is built once, when the first sample needs it."""
    holder = _AdapterHolder(config, adapter, local_rank)
    outcomes: list[EvalOutcome] = []
    try:
        for cycle in range(1, config.cycles + 1):
            outcomes.append(_run_cycle(config, dataset, out, shard, holder, console, cycle))
            if outcomes[-1].stopped is not None:
                break  # a stopped cycle's samples did not all run; the next waits for --resume
    finally:
        holder.close()
    return _combined(outcomes)


def _combined(outcomes: list[EvalOutcome]) -> EvalOutcome:
    """One outcome for a run of several cycles: cycle 1's counts and timings, every cycle's
    own errors (not the ``previous`` errors, which only repeat an earlier cycle's)."""
    first = outcomes[0]
    if len(outcomes) == 1:
        return first
    errors = list(first.errors)
    for cycle, outcome in enumerate(outcomes[1:], start=2):
        errors += [
            SampleError(e.sample_id, e.stage, f"cycle {cycle}: {e.message}", e.metric)
            for e in outcome.errors
            if e.stage != PREVIOUS_STAGE
        ]
    stopped = next((o.stopped for o in outcomes if o.stopped is not None), None)
    healed = sorted({sid for o in outcomes for sid in o.healed}, key=natural_key)
    return EvalOutcome(
        first.out_dir, first.finished, errors, timings=first.timings, stopped=stopped, healed=healed, cycles=outcomes
    )


class _AdapterHolder:
    """The run's adapter: resolved once, built when the first sample of any cycle needs it,
    closed at the end (unless the caller passed it in)."""

    def __init__(self, config: EvalConfig, adapter: Adapter | None, local_rank: int | None) -> None:
        self.config, self.given, self.local_rank = config, adapter, local_rank
        self.built: Adapter | None = adapter
        self._prepared: tuple[AdapterSpec, type[Adapter], dict[str, Any]] | None = None

    def prepared(self) -> tuple[AdapterSpec, type[Adapter], dict[str, Any]]:
        if self._prepared is None:
            self._prepared = _prepare_adapter(self.config, self.given, self.local_rank)
        return self._prepared

    def get(self) -> Adapter:
        if self.built is None:
            _, cls, values = self.prepared()
            self.built = instantiate(cls, values)
        return self.built

    def close(self) -> None:
        if self.built is not None and self.given is None:
            self.built.close()
            self.built = None


def _run_cycle(
    config: EvalConfig,
    dataset: EvalDataset,
    out: Path,
    shard: ShardSpec | None,
    holder: _AdapterHolder,
    console: Console,
    cycle: int,
) -> EvalOutcome:
    """One cycle of the round trip into ``cycle_dir(out, cycle)``."""
    started = time.perf_counter()
    directory = cycle_dir(out, cycle)
    store = RunStore(directory, durable=config.durable, tree=out)
    if store.has_previous_run() and not config.resume:
        raise ConfigError(f"{directory} already holds a run; pass --resume to continue it, or choose another --out")
    if config.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    all_ids = [s.sample_id for s in dataset.samples]
    owned = None if shard is None else set(shard.select(all_ids))  # dealt from the whole list
    samples = [s for s in dataset.samples if owned is None or s.sample_id in owned]
    layout = shard.layout(all_ids) if shard is not None else None
    owned_ids = [s.sample_id for s in samples]
    skipped: list[ErrorRecord] = []
    if cycle > 1:  # this cycle starts where the previous one ended
        samples, skipped = chain_samples(samples, RunStore(cycle_dir(out, cycle - 1), tree=out), config.trip, config.seed, cycle)

    spec, cls, values = holder.prepared()
    # the arguments that decide the outputs are the run's identity; the transport ones
    # (address, timeouts, retries) may differ between sessions and are recorded per session
    output_args, transport_args = split_args(cls, values)
    source = CaptionSource.load(Path(config.captions_from)) if config.captions_from is not None else None
    identity = {
        "model": config.model,
        "model_args": _jsonable(output_args),
        "protocol": None,  # filled once the generation size is known
        "seed": config.seed,
        "dataset": dataset.name,
        "captions_from": source.record if source is not None else None,
        "trip": None if config.trip == "image" else config.trip,  # absent on the image trip
    }
    previous = store.read_run_info() if config.resume else None
    directory.mkdir(parents=True, exist_ok=True)
    state = store.read_state(repair=True)

    timings = {"runner.read_s": 0.0, "runner.caption_s": 0.0, "runner.generate_s": 0.0, "runner.write_s": 0.0}
    # a resumed run's earlier calls count too: settings that changed between sessions are "varied"
    executed = _Executed(previous.executed_protocol() if previous is not None else ExecutedProtocol(), console)
    adapter_record = AdapterRecord(
        name=spec.name,
        target=spec.target,
        source=spec.source,
        sha256=spec.sha256,
        absent=frozenset({"output_identity"}) | (frozenset() if spec.sha256 is not None else frozenset({"sha256"})),
    )
    if previous is not None and previous.adapter is not None:
        adapter_record.describe = dict(previous.adapter.describe)
        adapter_record.capabilities = dict(previous.adapter.capabilities)
        _set_output_identity(adapter_record, previous.adapter.output_identity)
    if previous is not None:  # before loading a model: a mismatch needs no weights to detect
        _check_same_run(_comparable(previous, cls), identity, directory)
        _check_same_deal(previous.shard, layout, directory)
    healed = _heal(store, state, console) if config.resume else []
    stale = _stale(store, state, samples) if config.resume and cycle > 1 else []
    if healed or stale:
        state = store.read_state()
    pending = [s for s in samples if s.sample_id not in state.finished]
    invocation = InvocationRecord(
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        host=socket.gethostname(),
        pid=os.getpid(),
        command=config.command,
        transport=_jsonable(transport_args),
        healed=len(healed),
        absent=frozenset({"stopped"}),
    )
    stopped: str | None = None
    attempted = 0  # samples whose batch ran to its end this session
    if pending:
        built = holder.get()
        size = config.size or built.capabilities.native_resolution or config.protocol.generation.size
        identity["protocol"] = config.protocol.with_size(tuple(size)).to_dict()
        adapter_record.describe = _jsonable(built.describe())
        adapter_record.capabilities = _jsonable(vars(built.capabilities))
        now = _jsonable(built.output_identity())
        if previous is not None:
            _check_same_outputs(adapter_record.output_identity, now, directory)
        _set_output_identity(adapter_record, now)
    elif previous is not None:
        identity["protocol"] = previous.protocol
    # else: nothing to run and no history (an empty shard): protocol stays None, and
    # merge ignores it, rather than loading a model only to learn its resolution
    if previous is not None:
        _check_same_run(_comparable(previous, cls), identity, directory)
    name = config.name if config.name is not None else (previous.name if previous is not None else None)
    info = RunInfo(
        **identity,
        name=name,
        adapter=adapter_record,
        dataset_info=DatasetRecord(
            name=dataset.name,
            description=dataset.description,
            source=_jsonable(dataset.source),
            default_metrics=list(dataset.default_metrics),
            samples=len(dataset.samples),
            absent=frozenset({"reference_sha256"}),  # the results' record adds them
        ),
        shard=layout,
        owned_samples=owned_ids,  # lets merge spot samples that never ran
        metrics=list(config.metrics) if config.metrics else (previous.metrics if previous is not None else None),
        processed_this_session=len(pending),
        executed=executed_record(executed.value),
        training=(
            TrainingRecord.from_dict(config.training)
            if config.training is not None
            else (previous.training if previous is not None else None)
        ),
        batch_size=config.batch_size,
        limit=config.limit,
        invocations=[*(previous.invocations if previous is not None else []), invocation],
        cycle=cycle if cycle > 1 else None,
        cycles=config.cycles if cycle == 1 and config.cycles > 1 else None,
    )
    # merge's and the end of the session's keys; no optional key that is not set
    info.absent = frozenset({"shards", "timings"}) | info.unset_optional()
    store.write_run_info(info)
    fresh_skips = [e for e in skipped if state.errors.get(e.sample_id) != e]
    if fresh_skips:  # said once, not again on every resume
        with store:
            for error in fresh_skips:
                store.fail(error)
    if pending:
        built = holder.get()
        batch_size = max(1, min(config.batch_size, built.capabilities.max_batch_size or 1))
        protocol = identity["protocol"]
        size = (protocol["generation"]["width"], protocol["generation"]["height"])
        # threads for decoding references and encoding/fsyncing outputs: both release the GIL
        workers = ThreadPoolExecutor(max_workers=min(batch_size, os.cpu_count() or 1, 8))
        label = "round trip" if config.cycles == 1 else f"{config.trip} trip, cycle {cycle}/{config.cycles}"
        with workers, store, progress_bar(config.progress, console) as progress:
            task = progress.add_task(label, total=len(pending)) if progress else None

            def calling(stage: str | None) -> None:
                """Show the adapter call in flight and its running time on the bar."""
                if progress:
                    progress.update(task, call=stage, call_started=time.monotonic())

            # Samples whose request could not reach the server are held back: if the
            # server is gone for good they are not the samples' fault and stay unrun
            # (the breaker stops the run); once the server answers again, they are errors.
            unreached: list[ErrorRecord] = []
            for start in range(0, len(pending), batch_size):
                batch = [
                    _Item(s, trip_seed(config.seed, s.sample_id, config.trip, cycle))
                    for s in pending[start : start + batch_size]
                ]
                before = executed.value
                try:
                    _run_batch(
                        batch, built, store, protocol["caption_prompt"], size, timings, executed, workers, source,
                        calling, unreached, trip=config.trip,
                    )
                except ServerUnreachableError as err:
                    # every batch before this one is on disk; this one committed nothing
                    stopped = str(err)
                    unreached.clear()
                    break
                finally:
                    calling(None)
                attempted += len(batch)
                if any(item.answered for item in batch):
                    for error in unreached:
                        store.fail(error)
                    unreached.clear()
                if executed.value != before:  # on disk at once: a killed run keeps what it ran
                    info.executed = executed_record(executed.value)
                    store.write_run_info(info)
                if progress:
                    progress.advance(task, len(batch))
            for error in unreached:  # the run ended without the breaker opening
                store.fail(error)
    timings["runner.total_s"] = time.perf_counter() - started
    # a resumed run's timings add up over its sessions
    earlier = (previous.timings if previous is not None else None) or {}
    info.timings = {key: float(earlier.get(key, 0.0)) + value for key, value in timings.items()}
    info.executed = executed_record(executed.value)
    info.absent = frozenset({"shards"}) | info.unset_optional()
    if stopped is not None:
        invocation.stopped = stopped
        invocation.absent = frozenset()
        info.processed_this_session = attempted
    store.write_run_info(info)
    state = store.read_state()
    owned_set = set(owned_ids)
    errors = [
        SampleError(e.sample_id, e.stage, e.message)
        for sid, e in sorted(state.errors.items(), key=lambda kv: natural_key(kv[0]))
        if sid in owned_set
    ]
    finished = sum(1 for sid in owned_ids if sid in state.finished)
    if stopped is not None:
        where = "" if cycle == 1 else f" of cycle {cycle}"
        stopped = (
            f"{stopped}; stopped after {finished} of {len(owned_ids)} samples{where}, finished work kept in {out}. "
            "Restart the server, then run the same command with --resume"
        )
    return EvalOutcome(directory, finished, errors, timings=timings, stopped=stopped, healed=healed)


def chain_samples(
    owned: Sequence[Sample], previous: RunStore, trip: str, seed: int, cycle: int
) -> tuple[list[Sample], list[ErrorRecord]]:
    """Cycle ``cycle``'s samples: each owned sample that finished in the previous cycle,
    starting from its output there (image trip: its reconstruction; text trip: its final
    caption), with the original ground truth (``meta``). A sample that failed there gets a
    ``previous`` error instead; one that never ran there (a stopped run) is left out."""
    state = previous.read_state()
    samples: list[Sample] = []
    skipped: list[ErrorRecord] = []
    for sample in owned:
        sid = sample.sample_id
        record = state.finished.get(sid)
        if record is not None:
            if trip == "image":
                samples.append(Sample(sid, reference=previous.resolve(record.image), meta=sample.meta))
            else:
                samples.append(Sample(sid, meta=sample.meta, prompt=record.caption))
        elif sid in state.errors:
            failed = state.errors[sid]
            skipped.append(
                ErrorRecord(
                    sid,
                    PREVIOUS_STAGE,
                    f"not run: cycle {cycle - 1} failed for this sample ({failed.stage}: {failed.message})",
                    trip_seed(seed, sid, trip, cycle),
                )
            )
    return samples, skipped


def _stale(store: RunStore, state: RunState, samples: Sequence[Sample]) -> list[str]:
    """A resumed later cycle's finished samples whose input is no longer the previous cycle's
    output (regenerated there with another result, or failed there since): retracted, so they
    are redone from the current input. Returns their ids."""
    inputs = {s.sample_id: s for s in samples}
    stale = []
    for sid, record in state.finished.items():
        sample = inputs.get(sid)
        if sample is None:
            stale.append(sid)
        elif sample.prompt is not None and record.prompt != sample.prompt:
            stale.append(sid)
        # an image trip's changed input is caught by verify(): the line hashes its input
    stale.sort(key=natural_key)
    store.retract(stale)
    return stale


def _heal(store: RunStore, state: RunState, console: Console) -> list[str]:
    """Verify a resumed run's finished samples; retract the ones whose files changed since
    they were written, so they are regenerated. Returns their ids."""
    problems = store.verify(state)
    if not problems:
        return []
    ids = sorted({p.sample_id for p in problems}, key=natural_key)
    store.retract(ids)
    shown = "; ".join(f"{p.sample_id}: {p.reason}" for p in problems[:5]) + ("; ..." if len(problems) > 5 else "")
    console.print(
        f"[yellow]resume: {len(ids)} finished sample(s) no longer match what was written ({shown}); regenerating them",
        highlight=False,
    )
    return ids


def _comparable(previous: RunInfo, cls: type[Adapter]) -> dict[str, Any]:
    """The previous run's identity with only the arguments that decide the outputs (a run
    file written before transport arguments were told apart holds all of them)."""
    identity = previous.identity()
    if isinstance(identity.get("model_args"), dict):
        identity["model_args"] = split_args(cls, identity["model_args"])[0]
    return identity


def _set_output_identity(record: AdapterRecord, value: dict[str, Any] | None) -> None:
    record.output_identity = value
    record.absent = record.absent - {"output_identity"} if value is not None else record.absent | {"output_identity"}


def _check_same_outputs(previous: dict[str, Any] | None, now: dict[str, Any] | None, out: Path) -> None:
    """A resumed run's adapter must produce its outputs the same way (a restarted or moved
    server must serve the same model with the same settings)."""
    if previous is not None and now is not None and previous != now:
        raise ConfigError(
            f"{out}: cannot resume, the adapter now reports another source of outputs ({now!r} vs {previous!r} "
            "in the run); serve the same model with the same settings, or use another --out"
        )


def _prepare_adapter(
    config: EvalConfig, adapter: Adapter | None, local_rank: int | None
) -> tuple[AdapterSpec, type[Adapter], dict[str, Any]]:
    if adapter is not None:
        cls = type(adapter)
        spec = AdapterSpec(config.model, f"{cls.__module__}:{cls.__qualname__}", "adapter passed in", source="instance")
        return spec, cls, dict(config.model_args)
    args = dict(config.model_args)
    spec, cls, values = prepare(config.model, args)
    if local_rank is not None and "device" not in values and "device" in _declared_names(cls):
        import torch

        if torch.cuda.is_available():  # one GPU per rank unless the user says otherwise
            spec, cls, values = prepare(config.model, {**args, "device": f"cuda:{local_rank}"})
    return spec, cls, values


def _declared_names(cls: type[Adapter]) -> set[str]:
    from unified_bench.adapters.registry import declared_args

    return {a.name for a in declared_args(cls)}


def _check_same_run(previous: dict[str, Any], identity: dict[str, Any], out: Path) -> None:
    """``previous``: the identity of the run already in ``out`` (``RunInfo.identity()``)."""
    for key in IDENTITY_KEYS:
        if key == "protocol" and (previous.get(key) is None or identity.get(key) is None):
            continue  # an empty shard does not know its protocol
        if previous.get(key) != identity.get(key):
            raise ConfigError(
                f"{out}: cannot resume, {key} differs from the run there "
                f"({previous.get(key)!r} vs {identity.get(key)!r}); use the same settings or another --out"
            )


def _check_same_deal(previous: dict[str, Any] | None, layout: dict[str, Any] | None, out: Path) -> None:
    """A resumed shard must be dealt from the same sample list into the same shard: with
    another list (another --limit, say) it would own other samples."""
    if previous is None or layout is None or "sample_ids_sha256" not in previous:
        return  # unsharded, or a shard recorded before deals were recorded
    if previous != layout:
        raise ConfigError(
            f"{out}: cannot resume, shard {layout['index']}/{layout['count']} of {layout['samples']} samples "
            f"differs from the shard there ({previous.get('index')}/{previous.get('count')} of "
            f"{previous.get('samples')} samples, ids {str(previous.get('sample_ids_sha256'))[:12]}); "
            "use the same --data, --limit and shard count, or another --out"
        )


def _run_batch(
    items: list[_Item],
    adapter: Adapter,
    store: RunStore,
    prompt: str,
    size: tuple[int, int],
    timings: dict[str, float],
    executed: _Executed,
    workers: Executor | None = None,
    source: CaptionSource | None = None,
    calling: Callable[[str | None], None] | None = None,
    unreached: list[ErrorRecord] | None = None,
    *,
    trip: str = "image",
) -> None:
    """One batch through both stages; each item ends either committed or failed, all of
    them before the next batch starts. With ``source`` (``--captions-from``) the captions
    are that run's and the adapter's captioner is never called. ``calling`` is told which
    adapter call is in flight (for the progress bar). The errors of samples whose request
    never reached the server go to ``unreached`` (when given) instead of ``errors.jsonl``.

    On the text trip each sample's prompt is drawn first (``generate``), then the drawing is
    captioned: the drawing is kept as ``images/<id>.png`` and the caption is the output. A
    sample that also has an image (a Shapes scene) keeps it as its reference, for the
    metrics that score the drawing.

    Raises :class:`ServerUnreachableError` (the adapter's server is gone) with nothing of
    the batch committed."""
    calling = calling or (lambda stage: None)
    t0 = time.perf_counter()
    if trip == "text":
        for item in items:
            _check_prompt(item, store)
    elif workers is not None and len(items) > 1:
        list(workers.map(lambda item: _load_reference(item, store), items))
    else:
        for item in items:
            _load_reference(item, store)
    live = [i for i in items if i.error is None]
    t1 = time.perf_counter()
    if trip == "text":
        _drawings(live, adapter, lambda item: item.sample.prompt, size, executed, calling)
    elif source is not None:
        for item in live:
            source.give(item)
        if live:  # what produced these captions: the source run's executed caption settings
            executed.observe("caption", lambda: source.settings, ExecutedCaption)
    else:
        _captions(live, adapter, lambda item: item.image, prompt, executed, calling)
    t2 = time.perf_counter()
    live = [i for i in live if i.error is None]
    if trip == "text":
        _captions(live, adapter, lambda item: item.output, prompt, executed, calling)
    else:
        _drawings(live, adapter, lambda item: item.caption, size, executed, calling)
    t3 = time.perf_counter()
    calling(None)
    _commit(items, store, workers, unreached, prompted=trip == "text")
    first, second = ("generate", "caption") if trip == "text" else ("caption", "generate")
    timings["runner.read_s"] += t1 - t0
    timings[f"runner.{first}_s"] += t2 - t1
    timings[f"runner.{second}_s"] += t3 - t2
    timings["runner.write_s"] += time.perf_counter() - t3


def _check_prompt(item: _Item, store: RunStore) -> None:
    """A text-trip sample's prompt, checked; its image, if it has one, kept as its reference."""
    text = item.sample.prompt
    if _known_bad(item):
        return
    if text is None:
        item.fail("prompt", f"sample {item.sample.sample_id} has no prompt; the text trip starts from one")
    elif not text.strip():
        item.fail("prompt", "the prompt is empty or only white space")
    elif item.sample.reference is not None or item.sample.image is not None:
        _hash_reference(item, store)


def _captions(
    live: list[_Item],
    adapter: Adapter,
    picture: Callable[[_Item], Image.Image | None],
    prompt: str,
    executed: _Executed,
    calling: Callable[[str | None], None],
) -> None:
    """The caption stage: each live item's ``picture`` described; sets ``item.caption``."""
    calling("caption")
    _stage(
        live,
        lambda batch: adapter.caption(
            [picture(i) for i in batch],
            prompt=prompt,
            seeds=[i.seed for i in batch],
            sample_ids=[i.sample.sample_id for i in batch],
        ),
        check_captions,
        "caption",
        lambda item, value: setattr(item, "caption", value),
    )
    if live:
        executed.observe("caption", lambda: adapter.caption_settings(prompt), ExecutedCaption)


def _drawings(
    live: list[_Item],
    adapter: Adapter,
    text: Callable[[_Item], str | None],
    size: tuple[int, int],
    executed: _Executed,
    calling: Callable[[str | None], None],
) -> None:
    """The generate stage: each live item's ``text`` drawn; sets ``item.output``."""
    calling("generate")
    _stage(
        live,
        lambda batch: adapter.generate(
            [text(i) for i in batch], seeds=[i.seed for i in batch], size=size, sample_ids=[i.sample.sample_id for i in batch]
        ),
        check_images,
        "generate",
        lambda item, value: setattr(item, "output", value),
    )
    if live:
        executed.observe("generation", lambda: adapter.generation_settings(size), ExecutedGeneration)


def _commit(
    items: list[_Item],
    store: RunStore,
    workers: Executor | None,
    unreached: list[ErrorRecord] | None,
    *,
    prompted: bool = False,
) -> None:
    """Write the batch's finished samples (images, then their lines; ``prompted``: with the
    prompt each started from) and its errors."""
    done = [i for i in items if i.error is None]
    records = {
        item.sample.sample_id: CaptionRecord(
            item.sample.sample_id,
            item.caption or "",
            item.seed,
            f"{IMAGES_DIR}/{item.sample.sample_id}.png",
            store.relative(item.reference) if item.reference else "",
            item.reference_sha256,
            dict(item.sample.meta) if item.sample.meta else None,
            prompt=item.sample.prompt if prompted else None,
        )
        for item in done
    }
    failures = store.finish_many([(records[i.sample.sample_id], i.output) for i in done], workers)
    by_id = {i.sample.sample_id: i for i in items}
    for record, err in failures:
        by_id[record.sample_id].fail("write", f"cannot write {store.image_path(record.sample_id)}: {err}")
    for item in items:
        if item.error is not None:
            if item.unreachable and unreached is not None:
                unreached.append(item.error)
            else:
                store.fail(item.error)
        item.image = item.output = None


@dataclass
class CaptionSource:
    """``--captions-from``: an earlier run's finished captions, by sample id."""

    root: Path
    captions: dict[str, CaptionRecord]
    settings: ExecutedCaption | None
    record: dict[str, Any]

    @classmethod
    def load(cls, root: Path) -> CaptionSource:
        root = root.resolve()
        store = RunStore(root)
        info = store.read_run_info()
        if info is None or not (root / CAPTIONS_FILE).exists():
            raise ConfigError(f"--captions-from {root}: not a run directory (no run.json and {CAPTIONS_FILE})")
        captions = dict(store.read_state().finished)
        if not captions:
            raise ConfigError(f"--captions-from {root}: the run has no finished captions")
        # the captions themselves, canonically: a resumed or re-sharded source with the same
        # captions hashes the same, one with any caption changed does not
        canonical = json.dumps(
            {sid: [r.caption, r.reference_sha256] for sid, r in sorted(captions.items())}, sort_keys=True, ensure_ascii=False
        )
        record: dict[str, Any] = {
            "run": str(root),
            "run_id": _run_id(root),
            "captions_sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        }
        return cls(root, captions, info.executed_protocol().caption, record)

    def give(self, item: _Item) -> None:
        """Set ``item``'s caption from the source run, or fail it (a per-sample error)."""
        sid = item.sample.sample_id
        found = self.captions.get(sid)
        if found is None:
            item.fail("caption", f"no caption for sample {sid} in --captions-from run {self.root}")
        elif found.reference_sha256 and item.reference_sha256 and found.reference_sha256 != item.reference_sha256:
            item.fail(
                "caption",
                f"sample {sid}: its reference differs from the one captioned in --captions-from run {self.root}",
            )
        else:
            item.caption = found.caption


def _run_id(root: Path) -> str | None:
    """The source run's ``run_id`` (from its results.json), if it was scored."""
    try:
        return json.loads((root / "results.json").read_text(encoding="utf-8"))["run"]["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class _Executed:
    """The run's executed protocol, updated after every adapter call."""

    value: ExecutedProtocol = field(default_factory=ExecutedProtocol)
    console: Console | None = None
    warned: set[str] = field(default_factory=set)

    def observe(self, stage: str, report: Callable[[], Any], expected: type) -> None:
        """Ask the adapter what it ran; a report that raises or is malformed counts as not
        reported (said once per stage), never as a failure of the run."""
        try:
            settings = report()
            problem = None if settings is None else check_settings(settings, expected)
        except Exception as err:  # third-party code
            settings, problem = None, f"raised {type(err).__name__}: {err}"
        if problem is not None:
            if stage not in self.warned and self.console is not None:
                self.console.print(f"[yellow]the adapter's {stage} settings report {problem}; recorded as not reported", highlight=False)
            self.warned.add(stage)
            settings = None
        self.value = self.value.observe(stage, settings)


def _load_reference(item: _Item, store: RunStore) -> None:
    """Materialise an in-memory reference to refs/, hash it, decode it."""
    sample = item.sample
    if _known_bad(item):
        return
    if sample.reference is None and sample.image is None:
        item.fail("reference", f"sample {sample.sample_id} has no image; the image trip starts from one (--trip text starts from its prompt)")
        return
    try:
        if sample.reference is not None:
            item.reference = Path(sample.reference)
        else:
            item.reference = _materialise(sample, store)
        item.reference_sha256 = file_sha256(item.reference)
        item.image = load_image(item.reference)
    except (ImageLoadError, OSError, UnifiedBenchError) as err:
        item.fail("reference", str(err))


def _known_bad(item: _Item) -> bool:
    """A sample its dataset marked as unable to run (``Sample.problem``: an empty prompt, a
    line that is not UTF-8) fails with the dataset's message, never reaching the adapter."""
    problem = getattr(item.sample, "problem", None)
    if problem is not None:
        item.fail("dataset", problem)
    return problem is not None


def _hash_reference(item: _Item, store: RunStore) -> None:
    """The text trip's reference (a sample's image, kept for the metrics that score the
    drawing against it): materialised and hashed, not decoded (the round trip never reads it)."""
    sample = item.sample
    try:
        item.reference = Path(sample.reference) if sample.reference is not None else _materialise(sample, store)
        item.reference_sha256 = file_sha256(item.reference)
    except (ImageLoadError, OSError, UnifiedBenchError) as err:
        item.fail("reference", str(err))


def _materialise(sample: Sample, store: RunStore) -> Path:
    payload, suffix = encode_reference(sample)
    path = store.refs_dir / f"{sample.sample_id}{suffix}"
    if not path.exists() or path.read_bytes() != payload:
        store.write_bytes(path, payload)
    return path


def _stage(
    items: list[_Item],
    call: Callable[[list[_Item]], Any],
    check: Callable[[Any, int], list[SampleOutcome]],
    stage: str,
    accept: Callable[[_Item, Any], None],
) -> None:
    """Call the adapter on ``items``; if the call raises, retry one by one to isolate the
    failing sample (so one bad sample never fails its batch-mates). A server that stopped
    answering is no sample's fault: it stops the run."""
    if not items:
        return
    try:
        outputs = call(items)
    except Exception as err:  # an adapter is third-party code: any exception is per-sample
        unreachable = _server_gone(err)
        if unreachable is not None:
            raise unreachable from None
        if len(items) > 1:
            for item in items:
                _stage([item], call, check, stage, accept)
            return
        items[0].fail(stage, f"{type(err).__name__}: {err}", unreachable=_unreachable(err))
        return
    for item, outcome in zip(items, check(outputs, len(items))):
        if outcome.ok:
            accept(item, outcome.value)
        else:
            item.fail(stage, outcome.error or "invalid output")


def _server_gone(err: BaseException) -> ServerUnreachableError | None:
    """The breaker's error, also when an adapter wrapped it in its own exception."""
    return next((e for e in _chain(err) if isinstance(e, ServerUnreachableError)), None)


def _unreachable(err: BaseException) -> bool:
    """The request never reached a working server (see ``HttpError.unreachable``)."""
    return any(isinstance(e, HttpError) and e.unreachable for e in _chain(err))


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, paths and other objects -> str: what json would write and read back."""
    return json.loads(json.dumps(value, default=str, allow_nan=True))
