"""Render a scene to an anti-aliased RGB image, byte-identical on every machine.

No font, no drawing library: each pixel is covered by a 4x4 grid of sample points, a point
is inside an object by exact geometry (a circle equation or an even-odd polygon test in
float64), and the pixel is the integer blend ``(bg * (16 - k) + colour * k + 8) // 16`` of the
background and the object's colour, with ``k`` the number of covered points. Only IEEE
basic arithmetic and square roots enter the pixel path (vertex coordinates are written
with ``math.sqrt``, never sin/cos), so the bytes do not depend on the CPU, the maths
library or the Pillow version.

Geometry is in unit coordinates (the image is 1 x 1, a grid cell is 1/3 x 1/3); a
non-square output stretches it. Object extents plus the largest jitter stay inside the
object's cell, so objects never overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from unified_bench.tracks.shapes.scene import COLORS, Scene, ShapeObject

BACKGROUND: tuple[int, int, int] = (245, 244, 240)
SUPERSAMPLE = 4
CELL = 1.0 / 3.0
#: object "radius" in unit coordinates; each shape scales its outline by it (see _OUTLINES)
RADIUS = {"small": 0.062, "large": 0.11}
#: largest shift of an object centre from its cell centre, per axis
MAX_JITTER = 0.02
#: gap kept between an object and its cell border
_MARGIN = 0.004

_SQRT3 = math.sqrt(3.0)
_SQRT5 = math.sqrt(5.0)
_COS18 = math.sqrt(10.0 + 2.0 * _SQRT5) / 4.0
_SIN18 = (_SQRT5 - 1.0) / 4.0
_COS54 = math.sqrt(10.0 - 2.0 * _SQRT5) / 4.0
_SIN54 = (1.0 + _SQRT5) / 4.0


def _star(outer: float, inner: float) -> tuple[tuple[float, float], ...]:
    """Five-pointed star, point up, y down; shifted so its bounding box is centred."""
    unit = (
        (0.0, -1.0, outer), (_COS54, -_SIN54, inner), (_COS18, -_SIN18, outer), (_COS18, _SIN18, inner),
        (_COS54, _SIN54, outer), (0.0, 1.0, inner), (-_COS54, _SIN54, outer), (-_COS18, _SIN18, inner),
        (-_COS18, -_SIN18, outer), (-_COS54, -_SIN54, inner),
    )
    shift = outer * (1.0 - _SIN54) / 2.0
    return tuple((x * r, y * r + shift) for x, y, r in unit)


#: Polygon outlines in units of the object radius (y points down). Extents are chosen so the
#: shapes look about equally big; the largest is the star's 1.25.
_OUTLINES: dict[str, tuple[tuple[float, float], ...]] = {
    "square": ((-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)),
    "diamond": ((0.0, -1.15), (1.15, 0.0), (0.0, 1.15), (-1.15, 0.0)),
    # equilateral, circumradius 1.2, shifted so its bounding box is centred
    "triangle": ((0.0, -0.9), (0.6 * _SQRT3, 0.9), (-0.6 * _SQRT3, 0.9)),
    "star": _star(1.25, 0.55),
}
#: half-extent of each outline (circle: 1) in units of the radius
EXTENT = {"circle": 1.0, **{name: max(max(abs(x), abs(y)) for x, y in pts) for name, pts in _OUTLINES.items()}}


@dataclass(frozen=True)
class Placement:
    """Where an object is drawn: centre and radius in unit coordinates."""

    obj: ShapeObject
    cx: float
    cy: float
    radius: float


def layout(
    scene: Scene, *, jitter_seed: int | None = None, scale: float = 1.0, max_jitter: float = MAX_JITTER
) -> list[Placement]:
    """Object centres and radii. ``jitter_seed`` None puts every object at its cell centre.

    ``scale`` (radius multiplier) and ``max_jitter`` (largest centre shift) are
    augmentations for training the oracle; both are clipped so an object stays inside its
    cell with a margin.
    """
    if not scene.is_complete:
        raise ValueError("cannot render a scene with unknown attributes; use complete_scene() first")
    rng = None if jitter_seed is None else np.random.default_rng(np.random.SeedSequence([int(jitter_seed), 0x7E1]))
    placements = []
    for obj in scene.objects:
        row, col = divmod(obj.cell, 3)
        radius = min(RADIUS[obj.size] * scale, (CELL / 2 - MAX_JITTER - _MARGIN) / EXTENT[obj.shape])
        dx = dy = 0.0
        if rng is not None:
            room = max(0.0, min(max_jitter, CELL / 2 - _MARGIN - radius * EXTENT[obj.shape]))
            dx, dy = (float(v) for v in rng.uniform(-room, room, size=2))
        placements.append(Placement(obj, (col + 0.5) * CELL + dx, (row + 0.5) * CELL + dy, radius))
    return placements


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of sample points (object-local, in radius units) inside ``shape``."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    inside = np.zeros(u.shape, dtype=bool)
    points = _OUTLINES[shape]
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]):
        if y1 == y2:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (y1 > v) != (y2 > v)
        x_at = x1 + (v - y1) * ((x2 - x1) / (y2 - y1))
        inside ^= crosses & (u < x_at)
    return inside


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    width, height = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    return width, height


def blank_image(size: int | tuple[int, int] = 256) -> Image.Image:
    """The plain background alone (what an empty scene renders to)."""
    return Image.new("RGB", _size_pair(size), BACKGROUND)


def render(
    scene: Scene,
    size: int | tuple[int, int] = 256,
    *,
    jitter_seed: int | None = None,
    scale: float = 1.0,
    max_jitter: float = MAX_JITTER,
) -> Image.Image:
    """Render ``scene`` at ``size`` (an int, or (width, height)) as an RGB image."""
    width, height = _size_pair(size)
    canvas = np.empty((height, width, 3), dtype=np.int64)
    canvas[:] = BACKGROUND
    s = SUPERSAMPLE
    for place in layout(scene, jitter_seed=jitter_seed, scale=scale, max_jitter=max_jitter):
        reach = place.radius * EXTENT[place.obj.shape]
        x0 = max(0, math.floor((place.cx - reach) * width) - 1)
        x1 = min(width, math.ceil((place.cx + reach) * width) + 1)
        y0 = max(0, math.floor((place.cy - reach) * height) - 1)
        y1 = min(height, math.ceil((place.cy + reach) * height) + 1)
        # sample points at the centres of an s x s grid inside each pixel
        xs = (np.arange(x0 * s, x1 * s, dtype=np.float64) + 0.5) / (width * s)
        ys = (np.arange(y0 * s, y1 * s, dtype=np.float64) + 0.5) / (height * s)
        u = (xs[None, :] - place.cx) / place.radius
        v = (ys[:, None] - place.cy) / place.radius
        mask = _inside(place.obj.shape, *np.broadcast_arrays(u, v))
        covered = mask.reshape(y1 - y0, s, x1 - x0, s).sum(axis=(1, 3))[..., None]
        colour = np.array(COLORS[place.obj.color], dtype=np.int64)
        region = canvas[y0:y1, x0:x1]
        canvas[y0:y1, x0:x1] = (region * (s * s - covered) + colour * covered + (s * s) // 2) // (s * s)
    return Image.fromarray(canvas.astype(np.uint8), "RGB")
