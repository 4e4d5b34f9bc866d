"""Every bad-input case of docs/bad-input.md, made as a real file and fed to the real loader
and scoring engine."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import toy_metrics
from unified_bench.core import images as images_module
from unified_bench.cli import main
from unified_bench.core.errors import ImageLoadError
from unified_bench.core.images import load_image
from unified_bench.scoring import ScoringConfig, score_folders

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534


# ---------------------------------------------------------------- file makers


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand, so the header can say anything (e.g. a huge size)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(raw_rows))
        + _png_chunk(b"IEND", b"")
    )


def rgb16_png(array: np.ndarray) -> bytes:
    height, width, _ = array.shape
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    return png_bytes(width, height, 16, 2, rows)


def gradient(width: int = 48, height: int = 32) -> np.ndarray:
    x = np.linspace(0, 255, width)[None, :]
    y = np.linspace(0, 255, height)[:, None]
    return np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)


def quadrants() -> np.ndarray:
    """32 wide x 16 tall, four distinct colours, so any rotation or flip is visible."""
    out = np.zeros((16, 32, 3), np.uint8)
    out[:8, :16] = (255, 0, 0)
    out[:8, 16:] = (0, 255, 0)
    out[8:, :16] = (0, 0, 255)
    out[8:, 16:] = (255, 255, 0)
    return out


def write_exif_jpeg(path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(quadrants()).save(path, quality=95, subsampling=0, exif=exif.tobytes())


def write_animation(path: Path, **kwargs) -> None:
    frames = [Image.new("RGB", (10, 6), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs)
    with Image.open(path) as check:  # the premise: the file really is animated
        assert check.n_frames == 2


def write_truncated(path: Path, fmt: str) -> None:
    """Cut a noisy image's file in the middle of its pixel data (not in its headers)."""
    noise = np.random.default_rng(7).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format=fmt)
    data = path.read_bytes()
    cut = int(len(data) * 0.6)
    pixel_data_start = data.index(b"\xff\xda" if fmt == "JPEG" else b"IDAT")
    assert pixel_data_start < cut - 1000  # the premise: headers intact, pixels cut short
    path.write_bytes(data[:cut])


# ---------------------------------------------------------------- loader cases


@dataclass(frozen=True)
class Case:
    """One bad input: how to write it, and either the error it gives or a check of the pixels."""

    filename: str
    write: Callable[[Path], None]
    error: str | None = None  # substring of the ImageLoadError message
    check: Callable[[Image.Image], None] | None = None


def _check_cmyk(image: Image.Image) -> None:
    assert np.abs(np.asarray(image, np.float64) - gradient()).mean() < 4


def _write_cmyk(path: Path) -> None:
    Image.fromarray(gradient()).convert("CMYK").save(path, quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"


GRAY16 = (np.arange(32 * 48, dtype=np.uint64).reshape(32, 48) * 43).astype(np.uint16)


def _check_gray16(image: Image.Image) -> None:
    expected = np.rint(GRAY16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    pixels = np.asarray(image)
    assert (pixels[..., 0] == expected).all() and (pixels[..., 0] == pixels[..., 2]).all()
    # rescaled, not clipped: mid-range 16-bit values land mid-range, not at 255
    assert 100 < pixels[..., 0].mean() < 160


def _write_gray16(path: Path) -> None:
    Image.fromarray(GRAY16).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")


RGB16 = (np.random.default_rng(0).integers(0, 65536, size=(8, 12, 3))).astype(np.uint16)


def _check_rgb16(image: Image.Image) -> None:
    assert np.abs(np.asarray(image, np.float64) - RGB16 / 257.0).max() <= 1.0


PALETTE_INDICES = np.array([[0, 0, 1, 1, 2, 2]] * 4, np.uint8)
PALETTE = [255, 0, 0, 0, 0, 255, 10, 200, 30]


def _write_palette(path: Path, transparent: bool) -> None:
    image = Image.fromarray(PALETTE_INDICES, mode="P")
    image.putpalette(PALETTE + [0] * (768 - len(PALETTE)))
    image.save(path, **({"transparency": 0} if transparent else {}))
    with Image.open(path) as check:
        assert check.mode == "P" and (("transparency" in check.info) == transparent)


def _check_palette(transparent: bool) -> Callable[[Image.Image], None]:
    def check(image: Image.Image) -> None:
        colours = np.array(PALETTE, np.uint8).reshape(-1, 3)[PALETTE_INDICES]
        if transparent:
            colours[PALETTE_INDICES == 0] = 255
        assert (np.asarray(image) == colours).all()

    return check


ALPHAS = np.array([0, 64, 128, 255], np.uint8)
FOREGROUND = np.array([200, 40, 10], np.uint8)


def _write_rgba(path: Path) -> None:
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., :3] = FOREGROUND
    rgba[..., 3] = ALPHAS
    Image.fromarray(rgba, mode="RGBA").save(path)


def _check_rgba(image: Image.Image) -> None:
    alpha = ALPHAS[None, :, None] / 255.0
    expected = FOREGROUND * alpha + 255 * (1 - alpha)  # "over" a white background
    assert np.abs(np.asarray(image, np.float64) - expected).max() <= 1.0


def _write_gray_alpha(path: Path) -> None:
    Image.fromarray(np.stack([np.full((3, 4), 50, np.uint8), np.tile(ALPHAS, (3, 1))], -1), mode="LA").save(path)


def _check_gray_alpha(image: Image.Image) -> None:
    alpha = ALPHAS[None, :] / 255.0
    expected = 50 * alpha + 255 * (1 - alpha)
    assert np.abs(np.asarray(image, np.float64)[..., 1] - expected).max() <= 1.0


def _check_gray(value: int) -> Callable[[Image.Image], None]:
    def check(image: Image.Image) -> None:
        pixels = np.asarray(image, np.int16)
        assert np.abs(pixels - value).max() <= 2  # JPEG grayscale may move a level or two

    return check


def _check_exif(orientation: int) -> Callable[[Image.Image], None]:
    # Orientation 6: the stored image must turn 90 degrees clockwise to display; 8: counter-clockwise.
    expected = np.rot90(quadrants(), k=-1 if orientation == 6 else 1)
    wrong = np.rot90(quadrants(), k=1 if orientation == 6 else -1)

    def check(image: Image.Image) -> None:
        pixels = np.asarray(image, np.float64)
        assert pixels.shape == expected.shape == (32, 16, 3)
        assert np.abs(pixels - expected).mean() < 12
        assert np.abs(pixels - wrong).mean() > 60

    return check


def _write_malformed_exif(path: Path) -> None:
    Image.fromarray(gradient()).save(path, quality=95)
    payload = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\xff\xff"  # IFD claims 5 entries, has none
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = path.read_bytes()
    path.write_bytes(data[:2] + segment + data[2:])


def _check_malformed_exif(image: Image.Image) -> None:
    assert image.size == (48, 32)
    assert np.abs(np.asarray(image, np.float64) - gradient()).mean() < 4


def _write_int32_tiff(path: Path) -> None:
    Image.fromarray(GRAY16.astype(np.int32), mode="I").save(path)
    with Image.open(path) as check:
        assert check.mode == "I"


def _check_first_frame(image: Image.Image) -> None:
    assert image.size == (10, 6)
    assert np.abs(np.asarray(image, np.int16) - (255, 0, 0)).max() <= 2


def _check_one_pixel(image: Image.Image) -> None:
    assert image.size == (1, 1) and image.getpixel((0, 0)) == (12, 34, 56)


def _write_bomb(width: int, height: int) -> Callable[[Path], None]:
    # A valid PNG whose header declares a huge canvas; decoding it would need width*height*3 bytes.
    return lambda path: path.write_bytes(png_bytes(width, height, 8, 2, b"\x00" * 16))


CASES: dict[str, Case] = {
    "zero_byte": Case("zero_byte.png", lambda p: p.write_bytes(b""), error="empty file"),
    "truncated_jpeg": Case("truncated_jpeg.jpg", lambda p: write_truncated(p, "JPEG"), error="truncated"),
    "truncated_png": Case("truncated_png.png", lambda p: write_truncated(p, "PNG"), error="truncated"),
    "text_as_png": Case("text_as_png.png", lambda p: p.write_text("hello, I am not an image\n"), error="not a readable image"),
    "text_as_jpeg": Case("text_as_jpeg.jpg", lambda p: p.write_text("<html></html>\n"), error="not a readable image"),
    "bomb": Case("bomb.png", _write_bomb(100_000, 100_000), error="decompression-bomb"),
    # between Pillow's warning and error thresholds: Pillow only warns; we refuse
    "bomb_warning_zone": Case("bomb_warning_zone.png", _write_bomb(20_000, 20_000), error="decompression-bomb"),
    "cmyk_jpeg": Case("cmyk_jpeg.jpg", _write_cmyk, check=_check_cmyk),
    "gray16_png": Case("gray16_png.png", _write_gray16, check=_check_gray16),
    "int32_tiff_16bit_data": Case("int32_tiff_16bit_data.tif", _write_int32_tiff, check=_check_gray16),
    "malformed_exif": Case("malformed_exif.jpg", _write_malformed_exif, check=_check_malformed_exif),
    "rgb16_png": Case("rgb16_png.png", lambda p: p.write_bytes(rgb16_png(RGB16)), check=_check_rgb16),
    "palette_png": Case("palette_png.png", lambda p: _write_palette(p, False), check=_check_palette(False)),
    "palette_alpha_png": Case("palette_alpha_png.png", lambda p: _write_palette(p, True), check=_check_palette(True)),
    "rgba_png": Case("rgba_png.png", _write_rgba, check=_check_rgba),
    "gray_alpha_png": Case("gray_alpha_png.png", _write_gray_alpha, check=_check_gray_alpha),
    "gray_png": Case("gray_png.png", lambda p: Image.new("L", (5, 4), 77).save(p), check=_check_gray(77)),
    "gray_jpeg": Case("gray_jpeg.jpg", lambda p: Image.new("L", (16, 16), 140).save(p, quality=95), check=_check_gray(140)),
    "exif_rotate_6": Case("exif_rotate_6.jpg", lambda p: write_exif_jpeg(p, 6), check=_check_exif(6)),
    "exif_rotate_8": Case("exif_rotate_8.jpg", lambda p: write_exif_jpeg(p, 8), check=_check_exif(8)),
    "one_pixel": Case("one_pixel.png", lambda p: Image.new("RGB", (1, 1), (12, 34, 56)).save(p), check=_check_one_pixel),
    "animated_gif": Case("animated_gif.gif", write_animation, check=_check_first_frame),
    "animated_webp": Case("animated_webp.webp", lambda p: write_animation(p, lossless=True), check=_check_first_frame),
    "animated_png": Case("animated_png.png", write_animation, check=_check_first_frame),
    "dangling_symlink": Case("dangling_symlink.png", lambda p: p.symlink_to(p.parent / "gone.png"), error="cannot stat"),
}

ERROR_CASES = sorted(name for name, case in CASES.items() if case.error)
DECODED_CASES = sorted(name for name, case in CASES.items() if case.check)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loader_case(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    path = tmp_path / case.filename
    case.write(path)
    if case.error:
        with pytest.raises(ImageLoadError, match=case.error) as info:
            load_image(path)
        assert str(path) in str(info.value)  # the message names the file
    else:
        image = load_image(path)
        assert image.mode == "RGB"
        case.check(image)


def test_truncated_stays_an_error_when_pillow_is_told_to_accept_truncation(tmp_path, monkeypatch):
    # Some libraries switch this on process-wide; a half file would then score as grey padding.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = tmp_path / "half.jpg"
    write_truncated(path, "JPEG")
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever set it


def test_pixel_budget_is_ours_not_pillows(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(images_module, "MAX_PIXELS", 40 * 40 - 1)
    with pytest.raises(ImageLoadError, match="decompression-bomb"):
        load_image(path)
    monkeypatch.setattr(images_module, "MAX_PIXELS", 40 * 40)
    pillows = Image.MAX_IMAGE_PIXELS
    assert load_image(path).size == (40, 40)
    assert Image.MAX_IMAGE_PIXELS == pillows  # Pillow's global is restored


def test_guards_hold_while_other_threads_load_and_filter_warnings(tmp_path, monkeypatch):
    """Decoding runs in worker threads next to code that enters ``warnings.catch_warnings``.

    Saving and restoring Pillow's globals (or a warnings filter) per call let one thread's
    restore land inside another's decode, and a warning-zone bomb then decoded as a truncated
    file (seen in CI). Every load must give its own outcome, and the globals come back after.
    """
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as another library may
    for name in ("bomb_warning_zone", "truncated_png", "gray_png"):
        CASES[name].write(tmp_path / CASES[name].filename)
    expected = {"bomb_warning_zone": "decompression-bomb", "truncated_png": "truncated", "gray_png": None}
    pillows = Image.MAX_IMAGE_PIXELS
    stop = threading.Event()

    def filter_warnings() -> None:
        while not stop.is_set():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")

    def load(name: str) -> str | None:
        try:
            load_image(tmp_path / CASES[name].filename)
        except ImageLoadError as err:
            return next((key for key in ("decompression-bomb", "truncated") if key in str(err)), str(err))
        return None

    names = list(expected) * 40
    noise = threading.Thread(target=filter_warnings)
    noise.start()
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            outcomes = list(pool.map(load, names))
    finally:
        stop.set()
        noise.join()
    assert outcomes == [expected[name] for name in names]
    assert Image.MAX_IMAGE_PIXELS == pillows
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path / "folder.png")


def test_pipe_named_like_an_image_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would wait forever for a writer
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(fifo)


# ---------------------------------------------------------------- permissions


@pytest.fixture
def shared_tmp():
    """A temp folder an unprivileged user can enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="ub-perm-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def unprivileged():
    """Act as user 'nobody' for file access while inside the block.

    Root reads files whatever their mode (CI runs tests as root), so a chmod-000 file
    alone proves nothing there. Dropping the *effective* uid makes the kernel apply the
    permission bits for real; the saved uid lets the block hand root back afterwards.
    """
    if not RUNNING_AS_ROOT:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_file(shared_tmp):
    path = shared_tmp / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    with unprivileged(), pytest.raises(ImageLoadError, match="permission denied") as info:
        load_image(path)
    assert str(path) in str(info.value)
    if RUNNING_AS_ROOT:  # the premise: only the permission bits stood in the way
        assert load_image(path).size == (4, 4)


# ---------------------------------------------------------------- engine over bad files


def _reference(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(12, 16, 3), dtype=np.uint8))


def build_run(root: Path, case_names: list[str]) -> tuple[Path, Path]:
    """refs/<case>.png good references; images/<case file> the bad inputs as reconstructions;
    plus a clean 'control' pair and a pair whose *reference* is the broken file."""
    refs, recons = root / "refs", root / "images"
    refs.mkdir()
    recons.mkdir()
    for seed, name in enumerate(case_names):
        _reference(seed).save(refs / f"{name}.png")
        CASES[name].write(recons / CASES[name].filename)
    _reference(100).save(refs / "control.png")
    _reference(100).save(recons / "control.png")
    (refs / "broken_reference.png").write_bytes(b"")
    _reference(101).save(recons / "broken_reference.png")
    return recons, refs


def test_engine_continues_past_every_bad_file(tmp_path, monkeypatch):
    toy_metrics.register(monkeypatch, "toy-pair")
    recons, refs = build_run(tmp_path, sorted(CASES))
    config = ScoringConfig(metrics=["toy-pair"], progress=False, use_cache=False)
    outcome = score_folders(recons, refs, tmp_path / "out", config)

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    errors = {err["sample_id"]: err for err in results["errors"]}
    assert set(errors) == set(ERROR_CASES) | {"broken_reference"}
    for name in ERROR_CASES:
        assert errors[name]["stage"] == "load"
        assert errors[name]["message"].startswith("reconstruction:")
        assert CASES[name].error in errors[name]["message"]
    assert errors["broken_reference"]["message"].startswith("reference:")

    scores = results["similarities_by_model"]["toy-pair"]
    assert scores["control"] == pytest.approx(1.0)
    for name in DECODED_CASES:
        assert scores[name] is not None and 0.0 <= scores[name] <= 1.0
    for name in ERROR_CASES:
        assert scores[name] is None
    stats = results["statistics_by_model"]["toy-pair"]
    assert stats["valid_pairs"] == len(DECODED_CASES) + 1
    assert stats["total_images"] == len(CASES) + 2
    assert not outcome.ok
    rows = (tmp_path / "out" / "scores.csv").read_text().splitlines()
    assert sum("empty file" in row for row in rows) == 2  # zero_byte and broken_reference


def test_cli_exit_code_says_whether_any_sample_failed(tmp_path, monkeypatch, capsys):
    toy_metrics.register(monkeypatch, "toy-pair")
    recons, refs = build_run(tmp_path, ["zero_byte", "cmyk_jpeg"])
    args = ["score", "--images", str(recons), "--refs", str(refs), "--metrics", "toy-pair", "--no-cache"]
    with pytest.raises(SystemExit) as failed:
        main([*args, "--out", str(tmp_path / "out1")])
    assert failed.value.code == 1
    assert "zero_byte" in capsys.readouterr().err

    # the same run with the bad files removed exits 0
    (recons / "zero_byte.png").unlink()
    (refs / "zero_byte.png").unlink()
    (refs / "broken_reference.png").unlink()
    (recons / "broken_reference.png").unlink()
    main([*args, "--out", str(tmp_path / "out0")])  # returns normally: exit status 0
    results = json.loads((tmp_path / "out0" / "results.json").read_text())
    assert results["errors"] == [] and set(results["similarities_by_model"]["toy-pair"]) == {"cmyk_jpeg", "control"}


def test_engine_reports_an_unreadable_file_and_exits_1(shared_tmp, monkeypatch):
    toy_metrics.register(monkeypatch, "toy-pair")
    recons, refs, out = shared_tmp / "images", shared_tmp / "refs", shared_tmp / "out"
    for folder in (recons, refs, out):
        folder.mkdir()
    out.chmod(0o777)
    for name in ("readable", "locked"):
        _reference(1).save(refs / f"{name}.png")
        _reference(2).save(recons / f"{name}.png")
    args = ["score", "--images", str(recons), "--refs", str(refs), "--metrics", "toy-pair", "--no-cache", "--out", str(out)]
    # the same command once with privileges first: the modules it imports lazily (some from a
    # Python installation the unprivileged user cannot read) are imported now, whatever ran before
    try:
        main([*args[:-1], str(shared_tmp / "warm")])
    except SystemExit as warm:
        assert warm.code in (0, None)
    (recons / "locked.png").chmod(0)
    with unprivileged(), pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 1
    results = json.loads((out / "results.json").read_text())
    (error,) = results["errors"]
    assert error["sample_id"] == "locked" and "permission denied" in error["message"]
    assert results["similarities_by_model"]["toy-pair"]["readable"] is not None


def test_one_pixel_images_with_the_real_pixel_metrics(tmp_path):
    """A 1x1 pair decodes fine; SSIM cannot score it (a per-sample metric error), PSNR can."""
    refs, recons = tmp_path / "refs", tmp_path / "images"
    refs.mkdir()
    recons.mkdir()
    Image.new("RGB", (1, 1), (12, 34, 56)).save(refs / "dot.png")
    Image.new("RGB", (1, 1), (12, 34, 66)).save(recons / "dot.png")
    _reference(3).save(refs / "control.png")
    _reference(3).save(recons / "control.png")
    config = ScoringConfig(metrics=["ssim", "psnr"], progress=False, use_cache=False)
    outcome = score_folders(recons, refs, tmp_path / "out", config)
    results = outcome.results
    (error,) = results["errors"]
    assert (error["sample_id"], error["stage"], error["metric"]) == ("dot", "metric", "ssim")
    assert results["similarities_by_model"]["ssim"]["control"] == pytest.approx(1.0)
    assert results["similarities_by_model"]["psnr"]["dot"] == pytest.approx(10 * np.log10(255**2 / (100 / 3)))


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_streamed_decoding_reports_the_same_as_decoding_first(tmp_path, monkeypatch, batch_size):
    """On a GPU the first metric embeds images while later files still decode (prefetch on);
    bad files must come out exactly as when every file is decoded first: the same load
    errors, in sample order and ahead of metric errors, and the same scores."""
    toy_metrics.register(monkeypatch, "toy-embed", "toy-pair")
    recons, refs = build_run(tmp_path, sorted(CASES))
    results = {}
    for prefetch in (False, True):
        config = ScoringConfig(
            metrics=["toy-embed", "toy-pair"], progress=False, use_cache=False, prefetch=prefetch, batch_size=batch_size
        )
        score_folders(recons, refs, tmp_path / f"out-{prefetch}", config)
        results[prefetch] = json.loads((tmp_path / f"out-{prefetch}" / "results.json").read_text())
    first, streamed = results[False], results[True]
    assert streamed["errors"] == first["errors"]
    assert [err["sample_id"] for err in streamed["errors"]] == sorted(set(ERROR_CASES) | {"broken_reference"})
    assert streamed["similarities_by_model"] == first["similarities_by_model"]
    assert streamed["run"]["timings"]["decode_s"] > 0
    scores = streamed["similarities_by_model"]["toy-embed"]
    assert scores["control"] == pytest.approx(1.0, abs=1e-6) and all(scores[name] is None for name in ERROR_CASES)
