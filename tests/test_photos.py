"""The offline real-photo set: files present, deterministic export, card up to date, no network."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unified_bench.datasets.photos import (
    card_rows,
    export_photos,
    load_photos_dataset,
    photo_set,
    pixel_sha256,
)
from unified_bench.core.errors import DatasetError

CARD = Path(__file__).resolve().parents[1] / "data_cards" / "photos.md"
SMALL = ["chelsea", "coins", "china"]


def read_card_table() -> dict[str, dict[str, str]]:
    lines = [line for line in CARD.read_text().splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        if len(cells) == len(header) and cells[0] != "candidate":
            rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_every_photo_is_installed_and_decodes():
    photos = photo_set()
    assert len(photos) == 12 and len({p.id for p in photos}) == 12
    assert {p.distribution for p in photos} == {"scikit-image", "scikit-learn", "matplotlib"}
    for photo in photos:
        assert photo.source_file().is_file()
        assert photo.licence and photo.licence_source
    chelsea = photo_set(["chelsea"])[0].load()
    assert chelsea.mode == "RGB" and chelsea.size == (451, 300)
    gray = np.asarray(photo_set(["camera"])[0].load())
    assert (gray[..., 0] == gray[..., 2]).all()  # grayscale photos arrive as R = G = B


def test_unknown_photo_id_is_a_clear_error():
    with pytest.raises(DatasetError, match="unknown photo id.*nope.*known: astronaut"):
        photo_set(["chelsea", "nope"])


def test_export_is_byte_identical_across_runs(tmp_path):
    first = export_photos(tmp_path / "a", photo_set(SMALL))
    second = export_photos(tmp_path / "b", photo_set(SMALL))
    assert [p.name for p in first] == ["chelsea.png", "coins.png", "china.png"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
    with Image.open(first[0]) as png:
        assert png.format == "PNG" and png.mode == "RGB" and not png.info.get("exif")
        assert pixel_sha256(png) == pixel_sha256(photo_set(["chelsea"])[0].load())


def test_photos_load_with_the_network_blocked(tmp_path):
    # A child process whose sockets all fail: any download attempt would raise.
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k):\n    raise OSError('network blocked by test')\n"
        "socket.socket = refuse\nsocket.create_connection = refuse\n"
        "from unified_bench.datasets.photos import photo_set\n"
        "sizes = [p.load().size for p in photo_set()]\n"
        "assert 'pooch' not in sys.modules, 'a download helper was imported'\n"
        "print(len(sizes))\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "12"


def test_photos_dataset_is_lazy_and_complete():
    dataset = load_photos_dataset()
    assert dataset.name == "photos" and len(dataset) == 12
    assert dataset.default_metrics == ("effnet", "ssim", "psnr")
    first = dataset.samples[0]
    assert first.reference is None and callable(first.image) and first.image().mode == "RGB"


@pytest.mark.slow
def test_data_card_matches_the_installed_files():
    card = read_card_table()
    rows = card_rows()
    assert list(card) == [row["id"] for row in rows]
    same_pillow = f"Pillow {version('pillow')}" in CARD.read_text()
    for row in rows:
        entry = card[row["id"]]
        assert entry["size (WxH)"] == row["size"]
        assert entry["licence"] == row["licence"]
        assert entry["source sha256"] == row["source_sha256"], f"{row['id']}: package file changed; regenerate the card"
        assert entry["pixel sha256"] == row["pixel_sha256"], f"{row['id']}: decoded pixels changed"
        if same_pillow:  # PNG bytes are only promised for the Pillow build named in the card
            assert entry["png sha256"] == row["png_sha256"]
