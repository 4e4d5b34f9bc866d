"""Decode any image file we may meet into one well-defined RGB image, or say why not.

The rules (also in docs/bad-input.md):

- orientation: EXIF orientation is applied (the pixels are transposed), as a viewer would;
- animation: animated GIF/WebP/APNG use their first frame;
- alpha and palettes: transparent pixels are composited over white;
- high bit depth: 16-bit and 32-bit integer images are rescaled to 8 bits (not clipped);
- CMYK, grayscale, YCbCr, LAB: converted to RGB by Pillow;
- size: images over ``MAX_PIXELS`` are refused (decompression-bomb guard);
- anything that does not decode completely (zero bytes, truncation, not an image,
  no permission, a directory or pipe named like an image) raises :class:`ImageLoadError`
  with the path and the reason, whatever ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` says.
"""

from __future__ import annotations

import hashlib
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from unified_bench.core.errors import ImageLoadError

#: File suffixes treated as images when scanning a folder.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})

#: Pixel budget per image; ~ 16k x 16k. Larger files are refused, never decoded.
MAX_PIXELS = 16384 * 16384


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _TooLarge(Exception):
    """Raised inside :func:`load_image` when the header declares more than ``MAX_PIXELS``."""


_pillow_lock = threading.Lock()
_pillow_users = 0
_pillow_saved: tuple[int | None, bool] = (None, False)


@contextmanager
def _strict_pillow() -> Iterator[None]:
    """Hold Pillow's two process-wide settings at our values while any load is in flight.

    Decoding runs in worker threads. Saving and restoring the globals per call (or filtering
    Pillow's bomb warning with ``warnings.catch_warnings``, which is process-wide too) lets one
    thread's restore land in the middle of another's decode, so a file could slip past the
    guards. Instead the first loader in saves and sets them, the last one out restores them.

    - ``MAX_IMAGE_PIXELS = None``: Pillow's own bomb check (warn, then refuse at twice its
      limit) is off; :func:`load_image` checks ``MAX_PIXELS`` itself on the header.
    - ``LOAD_TRUNCATED_IMAGES = False``: another library may have switched it on; a truncated
      file would then decode silently with grey padding and get a wrong score.
    """
    global _pillow_users, _pillow_saved
    with _pillow_lock:
        if _pillow_users == 0:
            _pillow_saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        _pillow_users += 1
    try:
        yield
    finally:
        with _pillow_lock:
            _pillow_users -= 1
            if _pillow_users == 0:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _pillow_saved


def load_image(path: str | Path) -> Image.Image:
    """Open ``path`` and return a fully decoded RGB image, or raise ImageLoadError."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        raise ImageLoadError(f"{path}: cannot stat file ({err.strerror or err})") from err
    if not stat.S_ISREG(info.st_mode):
        # A directory or FIFO named like an image: opening a FIFO would block forever.
        raise ImageLoadError(f"{path}: not a regular file (directory, pipe or device)")
    if info.st_size == 0:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    try:
        with _strict_pillow(), Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                # Checked on the header, before any pixel is decoded.
                raise _TooLarge
            if getattr(image, "is_animated", False):
                image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except (_TooLarge, Image.DecompressionBombError) as err:
        raise ImageLoadError(
            f"{path}: image is larger than {MAX_PIXELS} pixels (decompression-bomb guard); "
            "downscale it before scoring"
        ) from err
    except PermissionError as err:
        raise ImageLoadError(f"{path}: permission denied; check the file's read permissions") from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(f"{path}: not a readable image (unknown or corrupt format)") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageLoadError(f"{path}: image data is corrupt or truncated ({err})") from err
    except Exception as err:  # noqa: BLE001 - decoder bugs on hostile files are per-file failures too
        raise ImageLoadError(f"{path}: image could not be decoded ({type(err).__name__}: {err})") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB following the module's rules."""
    if image.mode == "RGB":
        return image.copy() if image.readonly else image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image)
        if image.mode == "F":
            scaled = np.clip(array, 0.0, 1.0) * 255.0 if array.max(initial=0) <= 1.0 else np.clip(array, 0, 255)
        else:
            scaled = np.clip(array.astype(np.float64), 0, None) * (255.0 / _integer_range(image.mode, array))
        gray = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "1":
        image = image.convert("L")
    return image.convert("RGB")


def _integer_range(mode: str, array: np.ndarray) -> float:
    """Full-scale value of an integer image: its container's range, not its own maximum.

    ``I;16*`` is 16-bit by definition. Pillow's 32-bit ``I`` mode also carries 8- and 16-bit
    data, so the smallest of 8/16/31 bits that holds the data is taken as full scale.
    """
    if mode.startswith("I;16"):
        return 65535.0
    peak = float(array.max(initial=0))
    if peak <= 255:
        return 255.0
    if peak <= 65535:
        return 65535.0
    return float(2**31 - 1)
