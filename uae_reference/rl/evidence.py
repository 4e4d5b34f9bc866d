"""The committed evidence for Unified-GRPO's claims: per-sample test scores and a ledger of looks.

Layout (``docs/evidence/unified-grpo/``; a new training seed drops in as one more folder)::

    seed-<k>/<stage>.csv     sample_id, shapes-attr, effnet, ssim of one stage's test run (pre-rl, g4u, u4g)
    seed-<k>/manifest.json   where they were derived from, and by which command
    ledger.csv               every evaluation on the test split: date, stage, seed, purpose, ...

- :func:`derive_seed` writes ``seed-<k>/`` from a committed stage-run folder such as
  ``leaderboard/entries/shapes/uae-tiny-rl`` (its ``<stage>/results.json``), never from ``runs/``.
- :func:`summarise` reads those files alone: per seed, each stage's paired change
  (``after - before``) in Shapes F1 (``shapes-attr``) and ``effnet`` with a paired-bootstrap
  95% interval and a Bonferroni-corrected one, the correction counting the looks at that stage
  the ledger shows (level ``1 - 0.05 / looks``); across seeds, the mean and the standard
  deviation of the per-seed changes, undefined with one seed.
- :func:`evidence_markdown` is what ``uae-reference rl evidence`` prints and what
  ``docs/unified-grpo.md`` quotes between its ``rl-evidence`` markers (a test compares them).
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from unified_bench.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
#: the committed evidence folder
EVIDENCE_DIR = REPO / "docs" / "evidence" / "unified-grpo"
#: the committed stage runs the seed-0 evidence is derived from (first 200 test scenes)
ENTRIES_DIR = REPO / "leaderboard" / "entries" / "shapes" / "uae-tiny-rl"
LEDGER_FILE = "ledger.csv"
MANIFEST_FILE = "manifest.json"
STAGES: tuple[str, ...] = ("pre-rl", "g4u", "u4g")
#: each RL stage's change: the stage named by its "after"
CHANGES: tuple[tuple[str, str], ...] = (("pre-rl", "g4u"), ("g4u", "u4g"))
STORED_METRICS: tuple[str, ...] = ("shapes-attr", "effnet", "ssim")
CLAIM_METRICS: tuple[str, ...] = ("shapes-attr", "effnet")
LEDGER_COLUMNS: tuple[str, ...] = (
    "date", "stage", "seed", "scenes", "checkpoint", "result", "purpose", "new_look", "reconstructed", "source",
)
FAMILY_ALPHA = 0.05
RESAMPLES = 10_000
SEED_DIR = re.compile(r"^seed-(\d+)$")


# --- deriving the per-sample files ----------------------------------------------------------------


def derive_seed(
    entries: str | Path, out: str | Path, seed: int, *, stages: tuple[str, ...] = STAGES, note: str | None = None
) -> Path:
    """Write ``out/seed-<seed>/<stage>.csv`` (and its manifest) from ``entries/<stage>/results.json``.

    ``stages``: the stages this seed has (a U4G seed trained from another seed's G4U checkpoint has
    ``g4u`` and ``u4g`` only, so the shared G4U change is not counted twice); ``note``: where the
    seed's starting checkpoint came from, kept in the manifest and printed with the summary."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ConfigError(f"stages must be some of {', '.join(STAGES)}, got {', '.join(stages) or 'none'}")
    from uae_reference.rl.evaluate import per_sample_scores

    entries, folder = Path(entries), Path(out) / f"seed-{seed}"
    missing = [s for s in stages if not (entries / s / "results.json").is_file()]
    if missing:
        raise ConfigError(f"{entries} has no results.json for stage(s) {', '.join(missing)}; pass the folder `rl evaluate --out` wrote")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "seed": seed,
        "source": _relative(entries),
        "stages": list(stages),
        "command": f"uae-reference rl evidence --derive-from {_relative(entries)} --seed {seed}"
        + ("" if tuple(stages) == STAGES else f" --stages {','.join(stages)}")
        + ("" if note is None else f" --note {json.dumps(note)}"),
    }
    if note is not None:
        manifest["note"] = note
    for stage in stages:
        columns = {m: per_sample_scores(entries / stage, m) for m in STORED_METRICS}
        ids = sorted(set().union(*columns.values()))
        with (folder / f"{stage}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["sample_id", *STORED_METRICS])
            for sample_id in ids:
                writer.writerow([sample_id, *(_cell(columns[m].get(sample_id)) for m in STORED_METRICS)])
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def _cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))  # repr: the float to the bit


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --- reading them back ------------------------------------------------------------------------------

#: seed -> stage -> metric -> sample id -> score
Evidence = dict[int, dict[str, dict[str, dict[str, float]]]]


def read_notes(folder: str | Path = EVIDENCE_DIR) -> dict[int, str]:
    """Each seed's manifest note (where its starting checkpoint came from), by seed."""
    notes = {}
    for path in Path(folder).glob(f"seed-*/{MANIFEST_FILE}"):
        match = SEED_DIR.match(path.parent.name)
        if match is None:
            continue
        try:
            note = json.loads(path.read_text(encoding="utf-8")).get("note")
        except ValueError as err:
            raise ConfigError(f"{path}: not JSON ({err})") from None
        if isinstance(note, str) and note:
            notes[int(match.group(1))] = note
    return dict(sorted(notes.items()))


def read_evidence(folder: str | Path = EVIDENCE_DIR) -> Evidence:
    """Every ``seed-<k>/<stage>.csv`` under ``folder``."""
    folder = Path(folder)
    seeds = sorted((int(m.group(1)), p) for p in folder.glob("seed-*") if (m := SEED_DIR.match(p.name)) and p.is_dir())
    if not seeds:
        raise ConfigError(f"no seed-<k>/ folders in {folder}; derive them with `uae-reference rl evidence --derive-from ENTRIES --seed K`")
    out: Evidence = {}
    for seed, path in seeds:
        out[seed] = {}
        for stage in STAGES:
            file = path / f"{stage}.csv"
            if not file.is_file():
                continue
            with file.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
            out[seed][stage] = {m: {r["sample_id"]: float(r[m]) for r in rows if r.get(m)} for m in STORED_METRICS}
    return out


@dataclass(frozen=True)
class LedgerEntry:
    """One evaluation on the test split."""

    date: str
    stage: str
    seed: str
    scenes: str
    checkpoint: str
    result: str
    purpose: str
    #: a look that could inform a choice: a stage checkpoint not evaluated on the test split
    #: before, or a new kind of measurement on one (counts for the correction); re-running the
    #: same evaluation of the same checkpoint (a leaderboard entry's first 200 scenes) does not
    new_look: bool
    #: reconstructed afterwards from the docs' and the entries' git history, not written at the time
    reconstructed: bool
    source: str


def read_ledger(folder: str | Path = EVIDENCE_DIR) -> list[LedgerEntry]:
    path = Path(folder) / LEDGER_FILE
    if not path.is_file():
        raise ConfigError(f"no test-split ledger at {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != LEDGER_COLUMNS:
            raise ConfigError(f"{path}: columns must be {', '.join(LEDGER_COLUMNS)}")
        rows = list(reader)
    for row in rows:
        for flag in ("new_look", "reconstructed"):
            if row[flag] not in ("yes", "no"):
                raise ConfigError(f"{path}: {flag} must be yes or no, got {row[flag]!r}")
    return [LedgerEntry(**{**r, "new_look": r["new_look"] == "yes", "reconstructed": r["reconstructed"] == "yes"}) for r in rows]


def looks_at(ledger: list[LedgerEntry], stage: str) -> int:
    """How many looks at ``stage`` the ledger shows (its rows with ``new_look``; at least 1)."""
    return max(1, sum(e.new_look for e in ledger if e.stage == stage))


# --- the summary -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageChange:
    """One seed's paired change ``after - before`` of one metric."""

    before: str
    after: str
    metric: str
    seed: int
    n: int
    mean: float
    ci95: tuple[float, float]
    looks: int
    corrected_level: float
    corrected: tuple[float, float]

    @property
    def corrected_excludes_zero(self) -> bool:
        return self.corrected[0] > 0 or self.corrected[1] < 0


@dataclass(frozen=True)
class AcrossSeeds:
    """The per-seed changes of one stage and metric, summarised over seeds."""

    before: str
    after: str
    metric: str
    seeds: int
    mean: float
    #: sample standard deviation over seeds; None with a single seed (undefined)
    spread: float | None
    #: Student-t 95% interval of the mean over seeds (the seeds as the sample); None with one seed
    ci95: tuple[float, float] | None = None
    #: how many seeds' look-corrected intervals exclude zero, above and below it
    corrected_up: int = 0
    corrected_down: int = 0


@dataclass(frozen=True)
class EvidenceSummary:
    changes: list[StageChange]
    across: list[AcrossSeeds]
    resamples: int
    ledger: list[LedgerEntry]
    #: each seed's manifest note (where its start came from)
    notes: dict[int, str] = field(default_factory=dict)


def summarise(folder: str | Path = EVIDENCE_DIR, *, resamples: int = RESAMPLES) -> EvidenceSummary:
    """Per seed and stage, the paired change with its 95% and look-corrected intervals; across seeds, mean and spread."""
    from uae_reference.rl.evaluate import paired_bootstrap_ci

    evidence, ledger = read_evidence(folder), read_ledger(folder)
    changes: list[StageChange] = []
    for before, after in CHANGES:
        looks = looks_at(ledger, after)
        level = 1.0 - FAMILY_ALPHA / looks
        for metric in CLAIM_METRICS:
            for seed, stages in evidence.items():
                if before not in stages or after not in stages:
                    continue
                a, b = stages[before][metric], stages[after][metric]
                ids = sorted(set(a) & set(b))
                xs, ys = [a[i] for i in ids], [b[i] for i in ids]
                ci = paired_bootstrap_ci(xs, ys, resamples=resamples)
                wide = paired_bootstrap_ci(xs, ys, level=level, resamples=resamples)
                changes.append(StageChange(before, after, metric, seed, ci.n, ci.estimate, (ci.low, ci.high), looks, level, (wide.low, wide.high)))
    across = []
    for before, after in CHANGES:
        for metric in CLAIM_METRICS:
            mine = [c for c in changes if (c.before, c.after, c.metric) == (before, after, metric)]
            if mine:
                means = [c.mean for c in mine]
                spread = statistics.stdev(means) if len(means) > 1 else None
                up = sum(c.corrected[0] > 0 for c in mine)
                down = sum(c.corrected[1] < 0 for c in mine)
                across.append(
                    AcrossSeeds(before, after, metric, len(means), statistics.fmean(means), spread, seed_mean_ci(means), up, down)
                )
    return EvidenceSummary(changes, across, resamples, ledger, read_notes(folder))


def seed_mean_ci(means: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean of per-seed changes (each training seed one observation);
    None with fewer than two seeds."""
    if len(means) < 2:
        return None
    from scipy.stats import t

    centre = statistics.fmean(means)
    half = float(t.ppf(0.5 + level / 2, df=len(means) - 1)) * statistics.stdev(means) / len(means) ** 0.5
    return centre - half, centre + half


def evidence_markdown(summary: EvidenceSummary) -> str:
    """The tables ``uae-reference rl evidence`` prints (and the docs quote)."""
    reconstructed = sum(e.reconstructed for e in summary.ledger)
    lines = [
        f"Paired changes on the committed per-sample test scores (`docs/evidence/unified-grpo/seed-<k>/`), "
        f"paired percentile bootstrap, {summary.resamples:,} resamples. The corrected interval is Bonferroni's "
        f"over the looks at that stage's test results that the ledger shows ({len(summary.ledger)} evaluations, "
        f"{reconstructed} of them reconstructed from git history): level 1 - 0.05 / looks.",
        "",
        "| change | metric | seed | scenes | mean paired change | 95% CI | looks | corrected CI (level) | corrected CI excludes 0 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary.changes:
        verdict = ("yes, better" if c.corrected[0] > 0 else "yes, worse") if c.corrected_excludes_zero else "**no**"
        lines.append(
            f"| {c.before} -> {c.after} | {c.metric} | {c.seed} | {c.n} | {c.mean:+.4f} | [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] | "
            f"{c.looks} | [{c.corrected[0]:+.4f}, {c.corrected[1]:+.4f}] ({c.corrected_level:.2%}) | {verdict} |"
        )
    lines += [
        "",
        "| change | metric | seeds | mean of the seeds' changes | spread over seeds (sd) | 95% t-interval over seeds "
        "| seeds whose corrected CI excludes 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in summary.across:
        undefined = f"undefined (n={a.seeds} seed{'s' if a.seeds != 1 else ''})"
        spread = f"{a.spread:.4f}" if a.spread is not None else undefined
        interval = f"[{a.ci95[0]:+.4f}, {a.ci95[1]:+.4f}]" if a.ci95 is not None else undefined
        excluded = f"{a.corrected_up} of {a.seeds} better, {a.corrected_down} worse"
        lines.append(f"| {a.before} -> {a.after} | {a.metric} | {a.seeds} | {a.mean:+.4f} | {spread} | {interval} | {excluded} |")
    if summary.notes:
        lines.append("")
        lines += [f"- Seed {seed}: {note}" for seed, note in summary.notes.items()]
    unresolved = [c for c in summary.changes if not c.corrected_excludes_zero]
    lines.append("")
    for c in unresolved:
        lines.append(
            f"- {c.before} -> {c.after}, {c.metric}, seed {c.seed}: the corrected interval includes zero; "
            "this evidence does not show a change."
        )
    if not unresolved:
        lines.append("- Every corrected interval excludes zero.")
    single = list(dict.fromkeys(f"{a.before} -> {a.after}" for a in summary.across if a.spread is None))
    if single:
        lines.append(
            f"- One training seed for {', '.join(single)}: how much that change varies between training runs is not known."
        )
    return "\n".join(lines) + "\n"
