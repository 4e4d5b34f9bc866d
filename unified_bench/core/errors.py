"""One exception type per kind of user-facing failure.

Every message says what to do next (which file, which checkpoint, which flag). The CLI
prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UnifiedBenchError(Exception):
    """Base class for expected, user-facing failures."""


class ConfigError(UnifiedBenchError):
    """A flag, argument or config value is invalid."""


class ImageLoadError(UnifiedBenchError):
    """An image file cannot be decoded into an RGB image (a per-sample error)."""


class WeightsNotFoundError(UnifiedBenchError):
    """A metric or model checkpoint is not available locally and cannot be downloaded."""


class GatedCheckpointError(WeightsNotFoundError):
    """The checkpoint exists on the hub but needs an accepted licence and a token."""


class ResultsValidationError(UnifiedBenchError):
    """A results.json (or leaderboard entry) does not match the schema."""


class AdapterOutputError(UnifiedBenchError):
    """An adapter returned the wrong type, count or content (a per-sample error)."""


class DatasetError(UnifiedBenchError):
    """A dataset cannot be found, downloaded or read."""


class RunDirLockedError(UnifiedBenchError):
    """Another live process holds the run directory (one directory, one writer)."""


class ServerUnreachableError(UnifiedBenchError):
    """A model server stopped answering (a run of connection-level failures): the run stops
    with its finished samples kept, to be resumed once the server is back."""
