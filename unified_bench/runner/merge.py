"""Merge shard directories into one run directory, then score it.

Shards must come from the same run: same model, model arguments, protocol, seed and
dataset (checked from each shard's ``run.json``). A sample finished in several shards
(e.g. the same shard run twice) is kept once; shards of a deterministic adapter agree, and
a disagreement is reported rather than silently picking one. Merging is idempotent.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from unified_bench.datasets.base import natural_key
from unified_bench.core.errors import ConfigError
from unified_bench.core.images import file_sha256
from unified_bench.core.run_lock import RunDirLock
from unified_bench.results.model import SampleError
from unified_bench.core.protocol import ExecutedProtocol
from unified_bench.results.record import RunInfo, executed_record
from unified_bench.runner.config import IDENTITY_KEYS, EvalConfig, EvalOutcome
from unified_bench.runner.score import score_run
from unified_bench.runner.store import CAPTIONS_FILE, ERRORS_FILE, RUN_FILE, CaptionRecord, ErrorRecord, RunStore, cycle_dir


def merge_shards(
    shard_dirs: Sequence[str | Path],
    out: str | Path,
    config: EvalConfig | None = None,
    *,
    console: Console | None = None,
) -> EvalOutcome:
    """Copy every shard's finished samples into ``out``, write its run files, score it;
    ``out`` is locked against other processes meanwhile."""
    out = Path(out)
    with RunDirLock(out, command=config.command if config is not None else None, console=console):
        return _merge(shard_dirs, out, config, console=console)


def _merge(
    shard_dirs: Sequence[str | Path], out: Path, config: EvalConfig | None, *, console: Console | None
) -> EvalOutcome:
    roots = [Path(d) for d in shard_dirs]
    if not roots:
        raise ConfigError("merge needs at least one shard directory")
    finished, errors, timings, identity = _merge_cycle(roots, out, 1, None, console=console)
    # a run of several cycles: each later cycle's shard folders merge into out/cycles/<k>/
    cycles = max((RunStore(root).read_run_info() or RunInfo()).cycles or 1 for root in roots)
    for cycle in range(2, cycles + 1):
        _merge_cycle([cycle_dir(root, cycle) for root in roots], cycle_dir(out, cycle), cycle, roots, console=console)
    config = config or EvalConfig(model=identity["model"], data=str(identity["dataset"]), out=out)
    outcome = EvalOutcome(
        out,
        len(finished),
        [SampleError(e.sample_id, e.stage, e.message) for e in (errors[k] for k in sorted(errors, key=natural_key))],
        role="merger",
        timings=timings,
    )
    if config.score:
        outcome.score = score_run(out, config, console=console)
    return outcome


def _merge_cycle(
    shard_dirs: Sequence[Path], out: Path, cycle: int, shard_roots: Sequence[Path] | None, *, console: Console | None
) -> tuple[dict[str, CaptionRecord], dict[str, ErrorRecord], dict[str, float], dict[str, Any]]:
    """Merge one cycle's shard folders into ``out`` (its run files written, not scored).
    ``shard_roots`` (a later cycle): the shards' run roots, whose samples count as missing
    where a shard never reached this cycle."""
    present = [d for d in shard_dirs if cycle == 1 or (d / RUN_FILE).exists()]
    shards = [RunStore(d, tree=root) for d, root in zip(shard_dirs, shard_roots or shard_dirs) if d in present]
    if not shards:
        raise ConfigError(f"no shard reached cycle {cycle}; resume the shards, then merge again")
    infos = []
    for store in shards:
        info = store.read_run_info()
        if info is None:
            raise ConfigError(f"{store.root}: not a run directory (no run.json)")
        infos.append(info)
    identity = _common_identity(infos, [s.root for s in shards])
    absent_shards = _check_one_deal(infos, [s.root for s in shards])

    target = RunStore(out, tree=out.parent.parent if cycle > 1 else None)
    target.images_dir.mkdir(parents=True, exist_ok=True)
    finished: dict[str, CaptionRecord] = {}
    errors: dict[str, ErrorRecord] = {}
    conflicts: list[str] = []
    for store in shards:
        state = store.read_state()
        for problem in store.verify(state):  # a shard's files changed since it wrote them
            state.finished.pop(problem.sample_id, None)
            errors[problem.sample_id] = ErrorRecord(
                problem.sample_id,
                "missing",
                f"{store.root}: {problem.reason}; resume that shard (it regenerates the sample), then merge again",
            )
        for sid, record in state.finished.items():
            if sid in finished:
                if finished[sid].caption != record.caption:
                    conflicts.append(sid)
                continue
            finished[sid] = _copy_into(record, store, target)
        for sid, error in state.errors.items():
            errors.setdefault(sid, error)
    errors = {sid: e for sid, e in errors.items() if sid not in finished}
    for store, info in zip(shards, infos):
        for sid in info.owned_samples or []:
            if sid not in finished and sid not in errors:  # the shard stopped before reaching it
                errors[sid] = ErrorRecord(
                    sid, "missing", f"{store.root} never processed this sample; resume that shard, then merge again"
                )
    for directory, root in zip(shard_dirs, shard_roots or ()):
        if directory not in present:  # this shard stopped before the cycle began
            for sid in (RunStore(root).read_run_info() or RunInfo()).owned_samples or []:
                errors.setdefault(
                    sid, ErrorRecord(sid, "missing", f"{root} never reached cycle {cycle}; resume that shard, then merge again")
                )

    target.rewrite_jsonl(
        CAPTIONS_FILE, [finished[k].to_dict() for k in sorted(finished, key=natural_key)]
    )
    target.rewrite_jsonl(
        ERRORS_FILE,
        [{k: v for k, v in vars(errors[k]).items() if v is not None} for k in sorted(errors, key=natural_key)],
    )
    timings: dict[str, float] = {}
    for info in infos:
        for key, value in (info.timings or {}).items():
            if isinstance(value, (int, float)):
                timings[key] = timings.get(key, 0.0) + float(value)
    first = next((i for i in infos if i.protocol is not None), infos[0])
    merged = RunInfo(
        **identity,
        adapter=first.adapter,
        dataset_info=first.dataset_info,
        shard=None,
        shards=[{"dir": str(s.root), "shard": i.shard} for s, i in zip(shards, infos)],
        owned_samples=sorted({sid for i in infos for sid in i.owned_samples or []}, key=natural_key),
        metrics=first.metrics,
        batch_size=first.batch_size,
        limit=first.limit,
        executed=executed_record(_merged_executed(infos)),
        training=first.training,
        timings=timings,
        name=first.name,
        cycle=cycle if cycle > 1 else None,
        cycles=max((i.cycles or 1 for i in infos), default=1) if cycle == 1 else None,
    )
    merged.cycles = merged.cycles if merged.cycles and merged.cycles > 1 else None
    merged.absent = frozenset({"processed_this_session"}) | merged.unset_optional()
    target.write_run_info(merged)
    if absent_shards:
        (console or Console(stderr=True)).print(
            f"[yellow]merged without shard(s) {', '.join(absent_shards)}: their samples are not in {out}"
        )
    if conflicts:
        (console or Console(stderr=True)).print(
            f"[yellow]{len(conflicts)} sample(s) differ between shards (kept the first): {', '.join(conflicts[:10])}"
        )
    return finished, errors, timings, identity


def _merged_executed(infos: list[RunInfo]) -> ExecutedProtocol:
    """One executed protocol for all shards: a setting that differs between shards is varied."""
    merged = ExecutedProtocol()
    for info in infos:
        shard = info.executed_protocol()
        merged = merged.observe("caption", shard.caption).observe("generation", shard.generation)
        for stage in shard.varied:
            if stage not in merged.varied:
                merged = ExecutedProtocol(merged.caption, merged.generation, (*merged.varied, stage))
    return merged


def _common_identity(infos: list[RunInfo], roots: list[Path]) -> dict[str, Any]:
    identity: dict[str, Any] = {}
    for key in IDENTITY_KEYS:
        values = [(root, info.identity()[key]) for root, info in zip(roots, infos)]
        if key == "protocol":  # an empty shard never learned its protocol
            values = [(r, v) for r, v in values if v is not None] or values
        reference_root, reference = values[0]
        for root, value in values[1:]:
            if value != reference:
                raise ConfigError(
                    f"cannot merge: {key} of {root} ({value!r}) differs from {reference_root} ({reference!r}); "
                    "shards must come from one run (same model, args, protocol, seed and dataset)"
                )
        identity[key] = reference
    return identity


def _check_one_deal(infos: list[RunInfo], roots: list[Path]) -> list[str]:
    """Shards that record their deal must come from one deal (same shard count, same sample
    list); returns the labels ("I/N") of that deal's shards that were not given."""
    dealt = [(root, info.shard) for root, info in zip(roots, infos) if info.shard and "sample_ids_sha256" in info.shard]
    if not dealt:
        return []
    reference_root, reference = dealt[0]
    for root, shard in dealt[1:]:
        for key in ("count", "samples", "sample_ids_sha256"):
            if shard.get(key) != reference.get(key):
                raise ConfigError(
                    f"cannot merge: {root} was dealt as shard {shard.get('index')}/{shard.get('count')} of "
                    f"{shard.get('samples')} samples, {reference_root} as {reference.get('index')}/"
                    f"{reference.get('count')} of {reference.get('samples')} ({key} differs); "
                    "shards must split one sample list (same --data, --limit and shard count)"
                )
    given = {shard.get("index") for _, shard in dealt}
    count = int(reference["count"])
    return [f"{i}/{count}" for i in range(count) if i not in given] if len(dealt) == len(infos) else []


def _copy_into(record: CaptionRecord, source: RunStore, target: RunStore) -> CaptionRecord:
    """Copy a sample's image (and a reference kept inside the shard) into ``target``."""
    image_src = source.resolve(record.image)
    image_dst = target.image_path(record.sample_id)
    _copy_if_changed(image_src, image_dst)
    reference = record.reference
    ref_src = source.resolve(record.reference)
    # a materialised reference inside the shard (not a later cycle's input, "../../images/<id>.png",
    # which the earlier cycle's merge brings; not a text-trip sample without an image, "")
    if reference and not Path(reference).is_absolute() and not reference.startswith(".."):
        ref_dst = target.refs_dir / ref_src.name
        _copy_if_changed(ref_src, ref_dst)
        reference = target.relative(ref_dst)
    return replace(record, image=target.relative(image_dst), reference=reference)


def _copy_if_changed(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve():
        return
    if dst.exists() and dst.stat().st_size == src.stat().st_size and file_sha256(dst) == file_sha256(src):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.merge.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
