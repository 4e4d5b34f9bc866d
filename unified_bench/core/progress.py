"""The progress bar that long-running commands (``eval``, ``score``) draw with rich."""

from __future__ import annotations

import time
from contextlib import nullcontext
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text


class CallColumn(ProgressColumn):
    """The call in flight and how long it has been running (``generate 0:12:03``), from the
    task's ``call`` and ``call_started`` fields. The bar redraws several times a second, so a
    request that takes an hour, or never returns, is visibly alive (or visibly stuck)."""

    def render(self, task: Task) -> Text:
        call = task.fields.get("call")
        if not call:
            return Text("")
        elapsed = time.monotonic() - float(task.fields.get("call_started") or time.monotonic())
        return Text(f"{call} {timedelta(seconds=int(elapsed))}", style="progress.elapsed")


def progress_bar(enabled: bool, console: Console | None = None) -> Any:
    """A rich ``Progress`` (description, bar, done/total, elapsed, eta, the call in flight)
    on ``console`` (stderr by default), or a do-nothing context when ``enabled`` is false."""
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
        CallColumn(),
        console=console or Console(stderr=True),
    )
