"""Writing and reading run outputs atomically, and validating them against the schema."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from unified_bench.core.errors import ResultsValidationError
from unified_bench.results.model import ScoreReport, scores_table_rows

RESULTS_FILE = "results.json"
SCORES_FILE = "scores.csv"


@lru_cache(maxsize=1)
def results_schema() -> dict[str, Any]:
    return json.loads(resources.files("unified_bench.results").joinpath("schema.json").read_text())


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validate_results(data: Any, *, source: str = "results.json") -> None:
    """Raise ResultsValidationError naming the file and the offending field."""
    validator = jsonschema.Draft202012Validator(results_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (+{len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ResultsValidationError(f"{source}: field '{where}': {first.message}{more}")
    _reject_non_finite(data, source, [])


def _reject_non_finite(node: Any, source: str, path: list[str]) -> None:
    if isinstance(node, float) and not math.isfinite(node):
        raise ResultsValidationError(f"{source}: field '{'/'.join(path)}': non-finite number {node}")
    if isinstance(node, dict):
        for key, value in node.items():
            _reject_non_finite(value, source, path + [str(key)])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _reject_non_finite(value, source, path + [str(index)])


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json (or a run directory containing one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ResultsValidationError(f"{path}: cannot read ({err.strerror or err})") from err
    try:
        data = json.loads(text)  # Python's parser accepts NaN; validate_results rejects it
    except json.JSONDecodeError as err:
        raise ResultsValidationError(f"{path}: not valid JSON ({err})") from err
    validate_results(data, source=str(path))
    return data


def write_report(report: ScoreReport, out_dir: str | Path) -> dict[str, Any]:
    """Write ``results.json`` and ``scores.csv`` into ``out_dir``; return the results dict."""
    out_dir = Path(out_dir)
    data = report.to_results_json()
    validate_results(data, source=str(out_dir / RESULTS_FILE))
    atomic_write_text(out_dir / RESULTS_FILE, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    rows = scores_table_rows(report)
    columns = _columns(rows) if rows else ["sample_id", "reference", "reconstruction", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(out_dir / SCORES_FILE, buffer.getvalue())
    return data


def _columns(rows: list) -> list[str]:
    """Every row's keys in first-seen order, ``error`` last (the rows of several cycles may
    not all have the same metrics)."""
    seen = dict.fromkeys(key for row in rows for key in row if key != "error")
    return [*seen, "error"]


def read_report(path: str | Path) -> ScoreReport:
    """A run directory's (or a file's) ``results.json``, validated, as the typed report."""
    return ScoreReport.from_results_json(load_results(path))
