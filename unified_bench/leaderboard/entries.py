"""Finding, validating and reading leaderboard entries (all of it untrusted input).

Two kinds of entry:

- a **run**: a ``results.json`` (the results schema), usually inside its run directory with
  ``images/`` and ``captions.jsonl``; it is "reproduced here";
- a **reported** entry: a small JSON file with a ``reported`` block (``entry_schema.json``):
  a score published elsewhere, with its citation and URL.

A malformed entry is rejected with a message naming the file and the field, and the build
goes on without it. Images are read only from inside the entry's own run directory, except a
reference image elsewhere whose SHA-256 equals the one recorded in ``samples[]``, so a
crafted entry cannot make the build publish arbitrary files from the builder's disk.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from unified_bench.core.errors import ResultsValidationError
from unified_bench.core.images import file_sha256
from unified_bench.results.record import RunRecord
from unified_bench.results.io import RESULTS_FILE, load_results

CAPTIONS_FILE = "captions.jsonl"
#: relative tolerance when checking stored means against the per-sample scores
CONSISTENCY_RTOL = 1e-6
MAX_CURVE_ROWS = 200_000
MAX_WARNINGS = 20


@dataclass(frozen=True)
class Rejection:
    source: str
    message: str


@dataclass(frozen=True)
class Stat:
    """A mean with its 95% CI on the stored scale (None = missing)."""

    mean: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None


@dataclass(frozen=True)
class ChainStep:
    """One cycle of a sample's chain (a trip run): the text the cycle drew from (the text
    trip's prompt), the caption it wrote, and its image (drawn on the image trip's and the text
    trip's every cycle). ``recorded``: the cycle has a line for the sample (False: it failed
    or never ran); ``image`` is None where the file is not kept in the run directory."""

    cycle: int
    recorded: bool
    prompt: str | None = None
    caption: str | None = None
    image: Path | None = None


@dataclass
class SampleView:
    sample_id: str
    reference_sha256: str | None
    reference_file: Path | None  # readable and allowed, else None
    reconstruction_file: Path | None
    caption: str | None
    seed: int | None
    scores: dict[str, float | None]  # metric and "metric.sub" keys
    #: a trip run (``results.json`` has ``trip``): every cycle, cycle 1 first; empty otherwise
    chain: list[ChainStep] = field(default_factory=list)


@dataclass
class CycleView:
    """One cycle of a trip run: its scores against the original and against the previous
    cycle (empty for cycle 1), per metric and "metric.sub" key and per sample."""

    cycle: int
    stats: dict[str, Stat]
    previous: dict[str, Stat]
    scores: dict[str, dict[str, float | None]]  # sample id -> key -> score vs the original
    previous_scores: dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class Curve:
    step: tuple[float, ...]
    reward: tuple[float | None, ...]
    caption_length: tuple[float | None, ...]


@dataclass
class RunEntry:
    """A validated results.json and what the site shows of it."""

    source: str
    run_dir: Path
    data: dict[str, Any]
    run_id: str
    model_name: str
    stats: dict[str, Stat]  # metric and "metric.sub" keys
    samples: list[SampleView]
    record: RunRecord
    curve: Curve | None = None
    warnings: list[str] = field(default_factory=list)
    #: "image" or "text" for a trip run (a text trip, or several cycles); None: a default run
    trip: str | None = None
    #: a trip run's cycles, cycle 1 first (cycle 1's scores are also the official keys)
    cycles: list[CycleView] = field(default_factory=list)

    @property
    def run(self) -> dict[str, Any]:
        return self.data["run"]

    @property
    def trip_name(self) -> str:
        """The trip this run made: a default run is the image trip."""
        return self.trip or "image"

    @property
    def metrics(self) -> set[str]:
        """Metrics that produced at least one score."""
        return {k for k, s in self.stats.items() if "." not in k and s.mean is not None}


@dataclass
class ReportedEntry:
    source: str
    entry_id: str
    track: str
    model_name: str
    citation: str
    url: str
    where: str | None
    statement: str | None
    scale: int
    scores: dict[str, float]
    protocol: dict[str, Any] | None
    version: str | None = None
    table: str | None = None
    section: str | None = None
    row: str | None = None
    quote: str | None = None
    #: score key -> the number as printed (trailing zeros kept)
    printed: dict[str, str] = field(default_factory=dict)
    #: track metrics the source does not print for this row -> why
    not_reported: dict[str, str] = field(default_factory=dict)
    discrepancies: list[str] = field(default_factory=list)
    samples: int | None = None
    stated_protocol: dict[str, str] = field(default_factory=dict)
    read_from: str | None = None

    @property
    def location(self) -> str | None:
        """Where the numbers are printed: ``where``, else version, table and section."""
        if self.where:
            return self.where
        parts = [p for p in (self.version, self.table, self.section) if p]
        return ", ".join(parts) or None

    def shown(self, key: str) -> str | None:
        """A score as the source prints it (its own digits), None when it prints none."""
        if key in self.printed:
            return self.printed[key]
        value = self.scores.get(key)
        return None if value is None else f"{value:g}"


@dataclass
class LoadOutcome:
    runs: list[RunEntry]
    reported: list[ReportedEntry]
    rejections: list[Rejection]
    notices: list[str]


@lru_cache(maxsize=1)
def entry_schema() -> dict[str, Any]:
    return json.loads(resources.files("unified_bench.leaderboard").joinpath("entry_schema.json").read_text())


# ---- discovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    rank: int  # 0: --runs, 1: --entries; earlier wins a duplicate run id
    path: Path  # the JSON file
    run_dir: Path


def discover(runs: Sequence[Path], entries: Sequence[Path]) -> tuple[list[_Candidate], list[Rejection], list[str]]:
    """Every results.json under ``runs`` and every entry file under ``entries``, sorted."""
    found: dict[Path, _Candidate] = {}
    rejections: list[Rejection] = []
    notices: list[str] = []
    for rank, roots in ((0, runs), (1, entries)):
        for root in roots:
            root = Path(root)
            if root.is_file() and root.suffix == ".json":
                paths = [root]
            elif (root / RESULTS_FILE).is_file():
                paths = [root / RESULTS_FILE]
            elif root.is_dir():
                paths = sorted(root.rglob(RESULTS_FILE))
                if rank == 1:  # stored entries may also be loose JSON files in the folder
                    paths += sorted(p for p in root.glob("*.json") if p.name != RESULTS_FILE)
                if not paths:
                    notices.append(f"{root}: no results.json or entry file found here")
            else:
                rejections.append(Rejection(str(root), "not a directory or a .json file"))
                continue
            for path in paths:
                key = path.resolve()
                if key not in found:
                    found[key] = _Candidate(rank, path, path.parent)
    ordered = sorted(found.values(), key=lambda c: (c.rank, str(c.path)))
    return ordered, rejections, notices


# ---- loading ---------------------------------------------------------------------------------


def load_entries(runs: Sequence[Path], entries: Sequence[Path] = ()) -> LoadOutcome:
    """Load and validate every entry; bad ones become rejections, duplicates appear once."""
    candidates, rejections, notices = discover(runs, entries)
    run_entries: list[RunEntry] = []
    reported: list[ReportedEntry] = []
    by_run_id: dict[str, tuple[RunEntry, str]] = {}
    reported_ids: dict[str, str] = {}
    sha_cache: dict[Path, str | None] = {}
    for cand in candidates:
        source = str(cand.path)
        try:
            raw = _read_json(cand.path)
            if isinstance(raw, dict) and "reported" in raw:
                entry = parse_reported(raw, source=source, default_id=cand.path.stem)
                if entry.entry_id in reported_ids:
                    notices.append(
                        f"{source}: reported entry '{entry.entry_id}' already loaded from {reported_ids[entry.entry_id]}; shown once"
                    )
                    continue
                reported_ids[entry.entry_id] = source
                reported.append(entry)
                continue
            data = load_results(cand.path)
            check_consistency(data, source)
            run_entry = read_run(data, source, cand.run_dir, sha_cache)
        except ResultsValidationError as err:
            rejections.append(Rejection(source, str(err)))
            continue
        fingerprint = json.dumps(data, sort_keys=True)
        previous = by_run_id.get(run_entry.run_id)
        if previous is not None:
            first, first_print = previous
            if first_print == fingerprint:
                notices.append(f"{source}: same run as {first.source} (run id {run_entry.run_id!r}); shown once")
            else:
                rejections.append(
                    Rejection(
                        source,
                        f"field 'run/run_id': {run_entry.run_id!r} is already used by {first.source} "
                        "with different content; only the first is shown",
                    )
                )
            continue
        by_run_id[run_entry.run_id] = (run_entry, fingerprint)
        run_entries.append(run_entry)
    return LoadOutcome(run_entries, reported, rejections, notices)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsValidationError(f"{path}: cannot read ({err})") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ResultsValidationError(f"{path}: not valid JSON ({err})") from err


def _first_non_finite(node: Any, path: list[str]) -> str | None:
    if isinstance(node, float) and not math.isfinite(node):
        return "/".join(path)
    if isinstance(node, dict):
        items: Iterable[tuple[str, Any]] = ((str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        return None
    for key, value in items:
        found = _first_non_finite(value, path + [key])
        if found is not None:
            return found
    return None


def parse_reported(raw: dict[str, Any], *, source: str, default_id: str) -> ReportedEntry:
    """Validate a reported entry against ``entry_schema.json``."""
    validator = jsonschema.Draft202012Validator(entry_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (+{len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ResultsValidationError(f"{source}: field '{where}': {first.message}{more}")
    bad = _first_non_finite(raw, [])
    if bad is not None:
        raise ResultsValidationError(f"{source}: field '{bad}': non-finite number")
    rep = raw["reported"]
    check_printed(rep, source)
    return ReportedEntry(
        source=source,
        entry_id=raw.get("entry_id") or f"reported:{default_id}",
        track=raw["track"],
        model_name=raw["model"]["name"],
        citation=rep["citation"],
        url=rep["url"],
        where=rep.get("where"),
        statement=rep.get("statement"),
        scale=int(rep["scale"]),
        scores={k: float(v) for k, v in sorted(rep["scores"].items())},
        protocol=rep.get("protocol"),
        version=rep.get("version"),
        table=rep.get("table"),
        section=rep.get("section"),
        row=rep.get("row"),
        quote=rep.get("quote"),
        printed=dict(sorted(rep.get("printed", {}).items())),
        not_reported=dict(sorted(rep.get("not_reported", {}).items())),
        discrepancies=list(rep.get("discrepancies", [])),
        samples=rep.get("samples"),
        stated_protocol=dict(rep.get("stated_protocol", {})),
        read_from=rep.get("read_from"),
    )


def check_printed(rep: Mapping[str, Any], source: str) -> None:
    """A reported entry's numbers agree with themselves: ``printed`` (when given) has the keys
    of ``scores`` and the same values, each printed number appears in ``quote`` (when given),
    and nothing is both reported and ``not_reported``."""
    scores, printed = rep["scores"], rep.get("printed")
    if printed is not None:
        if set(printed) != set(scores):
            raise ResultsValidationError(
                f"{source}: field 'reported/printed': keys {sorted(printed)} are not the keys of 'scores' {sorted(scores)}"
            )
        for key, text in sorted(printed.items()):
            if float(text) != float(scores[key]):
                raise ResultsValidationError(
                    f"{source}: field 'reported/scores/{key}': {scores[key]!r} is not the printed {text!r}"
                )
            quote = rep.get("quote")
            if quote is not None and text not in quote.split():
                raise ResultsValidationError(
                    f"{source}: field 'reported/printed/{key}': {text!r} does not appear in the quoted row"
                )
    both = sorted(set(rep.get("not_reported", {})) & set(scores))
    if both:
        raise ResultsValidationError(f"{source}: field 'reported/not_reported': {both} also have scores")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=CONSISTENCY_RTOL, abs_tol=1e-9)


def _finite_values(values: Any) -> list[float]:
    if not isinstance(values, Mapping):
        return []
    return [float(v) for v in values.values() if isinstance(v, (int, float)) and math.isfinite(v)]


def check_consistency(data: Mapping[str, Any], source: str, where: str = "") -> None:
    """Stored means must equal the means of the stored per-sample scores, in every cycle too.

    A results file edited by hand (or crafted) to show a better mean than its own scores is
    rejected instead of ranked. ``where`` prefixes field paths (a cycle's block).
    """
    if not where:
        for index, cycle in enumerate(data.get("cycles") or []):
            check_consistency(cycle, source, f"cycles/{index}/")
            if cycle.get("vs_previous"):
                check_consistency(cycle["vs_previous"], source, f"cycles/{index}/vs_previous/")
    at = f"{source}: field '{where}"
    sims = data["similarities_by_model"]
    for name, stats in sorted(data["statistics_by_model"].items()):
        values = _finite_values(sims.get(name))
        if not values:
            raise ResultsValidationError(
                f"{at}statistics_by_model/{name}': has statistics but no per-sample "
                f"scores in similarities_by_model/{name}"
            )
        mean = sum(values) / len(values)
        if not _close(stats["average_similarity"], mean):
            raise ResultsValidationError(
                f"{at}statistics_by_model/{name}/average_similarity': "
                f"{stats['average_similarity']!r} is not the mean of its per-sample scores ({mean!r})"
            )
        if stats["valid_pairs"] != len(values):
            raise ResultsValidationError(
                f"{at}statistics_by_model/{name}/valid_pairs': {stats['valid_pairs']} but "
                f"{len(values)} finite per-sample scores"
            )
        ci = data["confidence_intervals"].get(name)
        if ci is not None and not _close(ci["mean"], mean):
            raise ResultsValidationError(
                f"{at}confidence_intervals/{name}/mean': {ci['mean']!r} is not the mean "
                f"of its per-sample scores ({mean!r})"
            )
    for key in ("unified_score", "extended_score"):
        block = data.get(key)
        if not block:
            continue
        means = []
        for name in block["metrics"]:
            stats = data["statistics_by_model"].get(name)
            if stats is None:
                raise ResultsValidationError(
                    f"{at}{key}/metrics': metric {name!r} has no statistics_by_model entry"
                )
            means.append(stats["average_similarity"])
        if not means:
            raise ResultsValidationError(f"{at}{key}/metrics': empty")
        expected = sum(means) / len(means) * float(block.get("scale", 100))
        if not _close(block["value"], expected):
            raise ResultsValidationError(
                f"{at}{key}/value': {block['value']!r} is not the mean of its metrics' "
                f"means x scale ({expected!r})"
            )
    for key, sub in sorted(data.get("sub_scores", {}).items()):
        values = _finite_values(sub["values"])
        if sub["mean"] is None:
            if values:
                raise ResultsValidationError(f"{at}sub_scores/{key}/mean': null but scores exist")
            continue
        if not values or not _close(sub["mean"], sum(values) / len(values)):
            raise ResultsValidationError(
                f"{at}sub_scores/{key}/mean': {sub['mean']!r} is not the mean of its values"
            )


def model_name(run: Mapping[str, Any]) -> str:
    """The run's label: its ``--name``, else the model's name (preset, adapter)."""
    label = run.get("name")
    if isinstance(label, str) and label.strip():
        return label
    model = run.get("model")
    if isinstance(model, Mapping):
        for key in ("name", "preset", "adapter"):
            value = model.get(key)
            if isinstance(value, str) and value.strip():
                return value
    return f"unnamed run {run['run_id'][:12]}"


def read_run(data: dict[str, Any], source: str, run_dir: Path, sha_cache: dict[Path, str | None]) -> RunEntry:
    """The site's view of a validated results.json."""
    run = data["run"]
    try:
        record = RunRecord.from_dict(run)
    except ResultsValidationError as err:
        raise ResultsValidationError(f"{source}: {err}") from None
    stats = _block_stats(data, data["model_types"])
    warnings: list[str] = []
    captions = read_captions(run_dir / CAPTIONS_FILE, warnings)
    seen: set[str] = set()
    samples: list[SampleView] = []
    records = data["samples"]
    if not records:  # a stored file without sample records still has per-sample scores
        ids = sorted({sid for values in data["similarities_by_model"].values() for sid in values})
        records = [{"sample_id": sid, "reference": "", "reconstruction": ""} for sid in ids]
    for index, rec in enumerate(records):
        sid = rec["sample_id"]
        if sid in seen:
            raise ResultsValidationError(f"{source}: field 'samples/{index}/sample_id': duplicate sample id {sid!r}")
        seen.add(sid)
        scores = _sample_scores(data, data["model_types"], sid)
        caption, seed = captions.get(sid, (None, None))
        ref_sha = rec.get("reference_sha256")
        samples.append(
            SampleView(
                sample_id=sid,
                reference_sha256=ref_sha,
                reference_file=resolve_reference(rec.get("reference") or "", ref_sha, run_dir, sha_cache),
                reconstruction_file=resolve_reconstruction(rec.get("reconstruction") or "", run_dir),
                caption=caption,
                seed=seed,
                scores=scores,
            )
        )
    samples.sort(key=lambda s: s.sample_id)
    curve = read_curve(run.get("training"), run_dir, warnings)
    trip = data.get("trip")
    cycles = [_cycle_view(block) for block in data.get("cycles") or []] if trip else []
    if trip:
        read_chains(samples, run_dir, len(cycles), warnings)
    return RunEntry(
        source, run_dir, data, run["run_id"], model_name(run), stats, samples, record, curve, warnings, trip, cycles
    )


def _block_stats(block: Mapping[str, Any], names: Iterable[str]) -> dict[str, Stat]:
    """Stat per metric and "metric.sub" key of a block in the official shape (the file's top
    level, or one cycle's)."""
    stats: dict[str, Stat] = {}
    for name in names:
        st = block["statistics_by_model"].get(name)
        ci = block["confidence_intervals"].get(name)
        stats[name] = _stat(st["average_similarity"] if st else None, ci, st["valid_pairs"] if st else None)
    for key, sub in (block.get("sub_scores") or {}).items():
        stats[key] = _stat(sub["mean"], sub.get("ci95"), None)
    return stats


def _sample_scores(block: Mapping[str, Any], names: Iterable[str], sid: str) -> dict[str, float | None]:
    scores: dict[str, float | None] = {}
    for name in names:
        scores[name] = _score(block["similarities_by_model"].get(name, {}).get(sid))
    for key, sub in (block.get("sub_scores") or {}).items():
        scores[key] = _score(sub["values"].get(sid))
    return scores


def _cycle_view(block: Mapping[str, Any]) -> CycleView:
    def parts(part: Mapping[str, Any] | None) -> tuple[dict[str, Stat], dict[str, dict[str, float | None]]]:
        if not part:
            return {}, {}
        names = list(part["similarities_by_model"])
        return _block_stats(part, names), {sid: _sample_scores(part, names, sid) for sid in part["samples"]}

    stats, scores = parts(block)
    previous, previous_scores = parts(block.get("vs_previous"))
    return CycleView(int(block["cycle"]), stats, previous, scores, previous_scores)


def cycle_folder(run_dir: Path, cycle: int) -> Path:
    """Where cycle ``cycle`` of a run lives: the run directory itself for cycle 1, else
    ``cycles/<k>/`` (the runner's ``store.cycle_dir``; not imported, the leaderboard reads files)."""
    return run_dir if cycle == 1 else run_dir / "cycles" / str(cycle)


def read_chains(samples: Sequence[SampleView], run_dir: Path, cycles: int, warnings: list[str]) -> None:
    """Each sample's chain over the cycles, from every cycle's captions.jsonl and images (only
    files inside the run directory are read; a pruned drawing is simply not kept)."""
    for cycle in range(1, cycles + 1):
        folder = cycle_folder(run_dir, cycle)
        label = CAPTIONS_FILE if cycle == 1 else f"cycles/{cycle}/{CAPTIONS_FILE}"
        rows = caption_rows(folder / CAPTIONS_FILE, warnings, label)
        for sample in samples:
            row = rows.get(sample.sample_id)
            if row is None:
                sample.chain.append(ChainStep(cycle, recorded=False))
                continue
            image = row.get("image")
            recorded = image if isinstance(image, str) and image else f"images/{sample.sample_id}.png"
            path = folder / recorded
            kept = path if not Path(recorded).is_absolute() and path.is_file() and _inside(path, run_dir) else None
            sample.chain.append(
                ChainStep(cycle, True, _text(row.get("prompt")), _text(row.get("caption")), kept)
            )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _score(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _stat(mean: float | None, ci: Mapping[str, Any] | None, n: int | None) -> Stat:
    if ci:
        return Stat(mean, float(ci["low"]), float(ci["high"]), n if n is not None else int(ci["n"]))
    return Stat(mean, None, None, n)


# ---- files referenced by an entry ------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def resolve_reconstruction(recorded: str, run_dir: Path) -> Path | None:
    """The reconstruction file, only if it lies inside the run directory."""
    if not recorded:
        return None
    path = Path(recorded)
    options = [path if path.is_absolute() else run_dir / path, run_dir / "images" / path.name]
    for option in options:
        if option.is_file() and _inside(option, run_dir):
            return option
    return None


def resolve_reference(
    recorded: str, sha256: str | None, run_dir: Path, sha_cache: dict[Path, str | None]
) -> Path | None:
    """The reference image: inside the run directory, or anywhere if its hash matches."""
    if not recorded:
        return None
    path = Path(recorded)
    options = [run_dir / "refs" / path.name]
    options.append(path if path.is_absolute() else run_dir / path)
    if not path.is_absolute():
        options.append(path)  # recorded relative to the directory the scorer ran in
    for option in options:
        if not option.is_file():
            continue
        if sha256 is None:
            if _inside(option, run_dir):
                return option
            continue
        key = option.resolve()
        if key not in sha_cache:
            try:
                sha_cache[key] = file_sha256(key)
            except OSError:
                sha_cache[key] = None
        if sha_cache[key] == sha256:
            return option
    return None


def read_captions(path: Path, warnings: list[str]) -> dict[str, tuple[str | None, int | None]]:
    """sample id -> (caption, seed) from captions.jsonl; bad lines become warnings."""
    out: dict[str, tuple[str | None, int | None]] = {}
    for sid, obj in caption_rows(path, warnings, CAPTIONS_FILE).items():
        caption = obj.get("caption")
        seed = obj.get("seed")
        out[sid] = (
            caption if isinstance(caption, str) else None,
            seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        )
    return out


def caption_rows(path: Path, warnings: list[str], label: str) -> dict[str, dict[str, Any]]:
    """sample id -> its line of a captions.jsonl (a JSON object); bad lines become warnings
    naming ``label``, a missing file gives nothing."""
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        warnings.append(f"{label}: cannot read ({err.strerror or err})")
        return out
    bad = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("sample_id"), str):
            bad += 1
            if bad <= MAX_WARNINGS:
                warnings.append(f"{label} line {number}: not a JSON object with a string sample_id; skipped")
            continue
        out[obj["sample_id"]] = obj
    if bad > MAX_WARNINGS:
        warnings.append(f"{label}: {bad - MAX_WARNINGS} more bad lines skipped")
    return out


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_curve(training: Any, run_dir: Path, warnings: list[str]) -> Curve | None:
    """Training curves from ``run.training.curve`` or the CSV named by ``curve_csv``."""
    if not isinstance(training, Mapping):
        return None
    curve = training.get("curve")
    if isinstance(curve, Mapping):
        steps = curve["step"]
        n = len(steps)

        def column(name: str) -> tuple[float | None, ...]:
            values = list(curve.get(name) or [])
            if values and len(values) != n:
                warnings.append(f"run.training.curve.{name}: {len(values)} values for {n} steps; not plotted")
                return (None,) * n
            return tuple(_number(v) for v in values) if values else (None,) * n

        return Curve(tuple(float(s) for s in steps), column("reward"), column("caption_length"))
    csv_name = training.get("curve_csv")
    if not isinstance(csv_name, str) or not csv_name:
        return None
    path = run_dir / csv_name
    if Path(csv_name).is_absolute() or not _inside(path, run_dir) or not path.is_file():
        warnings.append(f"run.training.curve_csv: {csv_name!r} is not a file inside the run directory; not plotted")
        return None
    steps: list[float] = []
    reward: list[float | None] = []
    length: list[float | None] = []
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "step" not in reader.fieldnames:
                warnings.append(f"{csv_name}: needs a header row with a 'step' column; not plotted")
                return None
            for row in reader:
                step = _number(row.get("step"))
                if step is None:
                    continue
                steps.append(step)
                reward.append(_number(row.get("reward")))
                length.append(_number(row.get("caption_length")))
                if len(steps) >= MAX_CURVE_ROWS:
                    warnings.append(f"{csv_name}: truncated to {MAX_CURVE_ROWS} rows")
                    break
    except OSError as err:
        warnings.append(f"{csv_name}: cannot read ({err.strerror or err})")
        return None
    return Curve(tuple(steps), tuple(reward), tuple(length))
