"""``python -m unified_bench.tracks.shapes``: see cli.py."""

from unified_bench.tracks.shapes.cli import main

if __name__ == "__main__":
    main()
