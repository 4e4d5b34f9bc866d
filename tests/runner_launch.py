"""``unified-bench`` with the toy metrics installed (tests run it as a subprocess / under torchrun)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import toy_metrics  # noqa: E402

toy_metrics.install("toy-pair", "toy-embed")

import trip_datasets  # noqa: E402

trip_datasets.install()

from unified_bench.cli import main  # noqa: E402

main(sys.argv[1:])
