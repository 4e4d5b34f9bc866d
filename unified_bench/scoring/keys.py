"""Metric keys: which metric a key names and which of its modes it scores on a trip.

A key is ``name`` or ``name@mode`` (mode among :data:`~unified_bench.metrics.READ_MODES`). The
key as given is the result's name (statistics, similarities, the ``scores.csv`` column), so the
image trip's keys are the metric names they always were.
"""

from __future__ import annotations

from collections.abc import Sequence

from unified_bench.core.errors import ConfigError
from unified_bench.metrics import metric_reads, split_metric_key

#: A run's trips: ``image`` (image -> caption -> image, the paper's) and ``text`` (prompt -> image -> caption).
TRIPS: tuple[str, ...] = ("image", "text")


def choose_mode(reads: Sequence[str], trip: str, explicit: str | None = None) -> str:
    """The mode a metric that reads ``reads`` scores on ``trip``: an explicit mode wins (it must
    be one the metric reads); on the text trip a metric that reads texts reads texts; otherwise
    the metric's first mode (an image-only metric: image; a pure image-text one: image-text)."""
    if trip not in TRIPS:
        raise ConfigError(f"unknown trip {trip!r}; use one of {', '.join(TRIPS)}")
    if explicit is not None:
        if explicit not in reads:
            raise ConfigError(f"mode {explicit!r} is not among the modes the metric reads ({', '.join(reads)})")
        return explicit
    if trip == "text" and "text" in reads:
        return "text"
    return reads[0]


def resolve_metric_key(key: str, trip: str) -> tuple[str, str]:
    """``'clip-text'`` on the text trip -> ``('clip-text', 'text')``; ``'shapes-attr@image'`` ->
    ``('shapes-attr', 'image')``. Imports the metric's class (no weights load)."""
    name, explicit = split_metric_key(key)
    reads = metric_reads(name)
    if explicit is not None and explicit not in reads:
        raise ConfigError(f"metric key {key!r}: {name!r} does not read {explicit!r}; it reads {', '.join(reads)}")
    return name, choose_mode(reads, trip, explicit)
