"""Match reconstructions to references by file stem, as the official script does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unified_bench.core.errors import ConfigError
from unified_bench.core.images import is_image_file

#: The official scorer also accepts reconstructions named ``recon_<stem>``.
RECON_PREFIX = "recon_"


@dataclass(frozen=True)
class Pair:
    """One sample to score. Image metrics read ``reference`` vs ``reconstruction``; text
    metrics ``reference_text`` (or ground truth in ``meta``) vs ``text``; image-text metrics
    ``reconstruction`` (the image drawn) vs ``reference_text`` (the text it was drawn from).
    What a mode does not read may be None; what it reads and lacks is a per-sample error."""

    sample_id: str
    reference: Path | None
    reconstruction: Path | None
    meta: Mapping[str, Any] | None = None
    reference_text: str | None = None
    text: str | None = None


@dataclass
class Pairing:
    pairs: list[Pair]
    unmatched_images: list[str] = field(default_factory=list)
    unmatched_refs: list[str] = field(default_factory=list)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` or below it, sorted for determinism.

    A dangling symlink named like an image is listed too, so that it becomes a per-sample
    load error instead of silently vanishing from the run.
    """
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a directory")
    return sorted(
        p for p in folder.rglob("*") if (p.is_file() or (p.is_symlink() and not p.exists())) and is_image_file(p)
    )


def match_pairs(images_dir: str | Path, refs_dir: str | Path) -> Pairing:
    """Pair every reconstruction in ``images_dir`` with the reference of the same stem.

    ``recon_<stem>`` matches ``<stem>``. Two files claiming one stem (``a.png`` and
    ``a.jpg``) are ambiguous: the first in sorted order is used and the other listed as
    unmatched, so nothing is scored twice.
    """
    images_dir, refs_dir = Path(images_dir), Path(refs_dir)
    refs: dict[str, Path] = {}
    unmatched_refs: list[str] = []
    for path in list_images(refs_dir):
        if path.stem in refs:
            unmatched_refs.append(str(path))
        else:
            refs[path.stem] = path
    pairs: list[Pair] = []
    used: set[str] = set()
    unmatched_images: list[str] = []
    for path in list_images(images_dir):
        stem = path.stem
        if stem not in refs and stem.startswith(RECON_PREFIX):
            stem = stem[len(RECON_PREFIX):]
        if stem in refs and stem not in used:
            used.add(stem)
            pairs.append(Pair(stem, refs[stem], path))
        else:
            unmatched_images.append(str(path))
    unmatched_refs.extend(str(path) for stem, path in refs.items() if stem not in used)
    pairs.sort(key=lambda pair: pair.sample_id)
    return Pairing(pairs, sorted(unmatched_images), sorted(unmatched_refs))
