"""The progress bar that long-running commands (``eval``, ``score``) draw with rich."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from rich.console import Console


def progress_bar(enabled: bool, console: Console | None = None) -> Any:
    """A rich ``Progress`` (description, bar, done/total, elapsed, eta) on ``console``
    (stderr by default), or a do-nothing context when ``enabled`` is false."""
    if not enabled:
        return nullcontext()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
    )
