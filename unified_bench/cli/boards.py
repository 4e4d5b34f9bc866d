"""``unified-bench table`` (the leaderboard's rows for papers and READMEs) and
``unified-bench dataset pin official`` (pin the official set's hashes and fingerprint)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from unified_bench.cli.common import console, err_console
from unified_bench.core.errors import ConfigError

dataset_app = typer.Typer(help="Reference sets: pin the official set's hashes.", no_args_is_help=True)


def table_cmd(
    track: Annotated[str, typer.Option("--track", help="Track slug: unified-bench, unified-bench-extended or shapes.")] = "unified-bench",
    fmt: Annotated[str, typer.Option("--format", help="md, csv, latex or json.")] = "md",
    runs: Annotated[Optional[list[Path]], typer.Option("--runs", help="A run directory, or a folder of run directories (repeatable).")] = None,
    entries: Annotated[Optional[list[Path]], typer.Option("--entries", help="Folder of stored entries, e.g. leaderboard/entries (repeatable).")] = None,
) -> None:
    """Print one track's rows (rank, status, score and metrics with CIs, reasons) as on the site and in leaderboard.json."""
    from unified_bench.leaderboard.board import TABLE_FORMATS, table
    from unified_bench.leaderboard.tracks import TRACKS

    if fmt not in TABLE_FORMATS:
        raise ConfigError(f"--format {fmt!r}: one of {', '.join(TABLE_FORMATS)}")
    slugs = [t.slug for t in TRACKS]
    if track not in slugs:
        raise ConfigError(f"--track {track!r}: one of {', '.join(slugs)}")
    if not runs and not entries:
        raise ConfigError("give at least one --runs DIR or --entries DIR")
    text, loaded = table(runs or [], entries or [], track, fmt)
    for rejection in loaded.rejections:
        err_console.print(f"rejected {rejection.source}: {rejection.message}", style="red", highlight=False, markup=False)
    sys.stdout.write(text)
    sys.stdout.flush()


@dataset_app.command("pin")
def pin_cmd(
    name: Annotated[str, typer.Argument(help="The set to pin: official.")],
    folder: Annotated[Optional[Path], typer.Option("--dir", help="The set's image folder (default: $UNIFIED_BENCH_OFFICIAL_DIR, else the cache).")] = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", help="Manifest file to write (default: the packaged official_manifest.json).")] = None,
    archive: Annotated[Optional[Path], typer.Option("--archive", help="The downloaded archive, to pin its hash (default: looked for in the cache).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache root (default: the benchmark's cache).")] = None,
) -> None:
    """Write the set's per-file hashes, fingerprint and archive hash into the manifest (review and commit it)."""
    import os

    from unified_bench.datasets.official import ENV_DIR, load_manifest, pin_official

    if name != "official":
        raise ConfigError(f"dataset pin {name!r}: only 'official' has a manifest to pin")
    if folder is None and os.environ.get(ENV_DIR):
        folder = Path(os.environ[ENV_DIR])
    if folder is None:
        from unified_bench.scoring.cache import default_cache_dir

        m = load_manifest(manifest)
        folder = (cache_dir or default_cache_dir()) / "datasets" / m.name / m.folder
    result = pin_official(folder, manifest_file=manifest, archive=archive, cache_dir=cache_dir)
    console.print(f"pinned {result.files} files in {result.manifest}", highlight=False, markup=False)
    console.print(f"fingerprint {result.fingerprint}", highlight=False, markup=False)
    if result.archive_sha256 is None:
        console.print("archive: not found (pass --archive PATH to pin its hash); archive_sha256 left as it was", highlight=False, markup=False)
    else:
        console.print(f"archive {result.archive}: sha256 {result.archive_sha256}", highlight=False, markup=False)
