"""``python -m unified_bench.datasets.shapes``: see cli.py."""

from unified_bench.datasets.shapes.cli import main

if __name__ == "__main__":
    main()
