"""The command line: the top layer. It parses flags and calls library functions that a
Python user can call too (``run_eval``, ``score_folders``, ``build_site``...).

``main`` is the ``unified-bench`` console script; the app itself is built on first use so that
importing :mod:`unified_bench.cli.entrypoint` (shared with ``uae-reference``) stays light.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage and user-facing errors print one line, no traceback."""
    from unified_bench.cli.app import app
    from unified_bench.cli.entrypoint import run_app

    run_app(app, argv)
