"""Results: the typed report, results.json (official keys + ours), its schema, and I/O."""

# results.model needs scoring.stats, and the scoring package needs results.io: initialise
# scoring first so that importing results before scoring does not hit a half-built module.
import unified_bench.scoring  # noqa: F401,I001
from unified_bench.results.io import load_results, validate_results, write_report
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
    "metric_statistics",
    "scores_table_rows",
    "validate_results",
    "write_report",
]
