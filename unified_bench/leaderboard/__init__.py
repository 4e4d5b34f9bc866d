"""The leaderboard: a static, offline HTML site built from results files and reported entries.

``build_site(runs, entries, out)`` validates every entry (untrusted input), places runs on
their tracks, computes paired comparisons and writes the pages; see ``leaderboard/README.md``
at the repository root for the entry formats.
"""

from unified_bench.leaderboard.builder import BuildResult, build_site
from unified_bench.leaderboard.entries import LoadOutcome, Rejection, load_entries
from unified_bench.leaderboard.tracks import TRACKS, Track

__all__ = ["BuildResult", "LoadOutcome", "Rejection", "TRACKS", "Track", "build_site", "load_entries"]
