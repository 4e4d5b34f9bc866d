"""Results: the typed report, results.json (official keys + ours), its schema, and I/O."""

from unified_bench.results.io import load_results, read_report, validate_results, write_report
from unified_bench.results.model import (
    MetricScores,
    SampleError,
    SampleRecord,
    ScoreReport,
    metric_statistics,
    scores_table_rows,
)

__all__ = [
    "MetricScores",
    "SampleError",
    "SampleRecord",
    "ScoreReport",
    "load_results",
    "read_report",
    "metric_statistics",
    "scores_table_rows",
    "validate_results",
    "write_report",
]
