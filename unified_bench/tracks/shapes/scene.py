"""Scenes of the Shapes track: what an image contains, as discrete attributes.

A scene is 1-4 objects, each a shape of a named colour and size in one cell of a named 3x3
grid, at most one object per cell (so objects never overlap and "the object in the top left"
is unambiguous). Everything a caption can say lives here; rendering details that captions do
not describe (a small position jitter inside the cell) are derived separately from a seed.

Scenes are drawn with numpy's PCG64 generator from an explicit seed, so the same seed gives
the same scene on every machine. Parsed captions may be partial: any attribute of a
:class:`ShapeObject` may then be ``None`` (unknown).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star")

#: Named colours, far apart in RGB (the smallest pairwise distance is ~90 of 441) and far
#: from the background. Order is the canonical order used by short captions.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 130, 10),
    "yellow": (240, 220, 20),
    "green": (40, 160, 60),
    "cyan": (30, 190, 210),
    "blue": (40, 80, 220),
    "purple": (140, 60, 180),
    "pink": (240, 120, 190),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

SIZES: tuple[str, ...] = ("small", "large")

#: Grid cells in row-major order; the index is the canonical object order of long captions.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top center",
    "top right",
    "center left",
    "center",
    "center right",
    "bottom left",
    "bottom center",
    "bottom right",
)

MIN_OBJECTS = 1
MAX_OBJECTS = 4

#: The attributes compared per object, in report order.
ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "position")


def _index(options: Sequence[str], value: str | None) -> int:
    """Sort key of an attribute value; unknown values sort last."""
    return options.index(value) if value in options else len(options)


@dataclass(frozen=True)
class ShapeObject:
    """One object. ``None`` means unknown (only in scenes parsed from partial captions)."""

    shape: str | None
    color: str | None
    size: str | None
    position: str | None

    def __post_init__(self) -> None:
        for name, options in (("shape", SHAPES), ("color", COLOR_NAMES), ("size", SIZES), ("position", POSITIONS)):
            value = getattr(self, name)
            if value is not None and value not in options:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(options)}")

    @property
    def cell(self) -> int | None:
        """Row-major grid index 0..8 of ``position``."""
        return None if self.position is None else POSITIONS.index(self.position)

    @property
    def is_complete(self) -> bool:
        return None not in (self.shape, self.color, self.size, self.position)

    def sort_key(self) -> tuple[int, int, int, int]:
        return (
            _index(POSITIONS, self.position),
            _index(SHAPES, self.shape),
            _index(COLOR_NAMES, self.color),
            _index(SIZES, self.size),
        )

    def to_dict(self) -> dict[str, str | None]:
        return {"shape": self.shape, "color": self.color, "size": self.size, "position": self.position}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeObject:
        return cls(data.get("shape"), data.get("color"), data.get("size"), data.get("position"))


@dataclass(frozen=True)
class Scene:
    """The objects of one image, kept in canonical order (by grid cell, then attributes).

    Two scenes are equal when they hold the same objects, whatever order they were given in.
    """

    objects: tuple[ShapeObject, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(sorted(self.objects, key=ShapeObject.sort_key)))

    def __len__(self) -> int:
        return len(self.objects)

    @property
    def is_complete(self) -> bool:
        return all(obj.is_complete for obj in self.objects)

    def validate(self) -> None:
        """Raise ValueError unless this is a scene the generator could produce."""
        if not MIN_OBJECTS <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene has {MIN_OBJECTS}-{MAX_OBJECTS} objects, got {len(self.objects)}")
        if not self.is_complete:
            raise ValueError("every object needs a shape, colour, size and position")
        cells = [obj.cell for obj in self.objects]
        if len(set(cells)) != len(cells):
            raise ValueError("at most one object per grid cell")

    def to_dict(self) -> dict[str, Any]:
        return {"objects": [obj.to_dict() for obj in self.objects]}

    def to_json(self) -> str:
        """Compact, key-sorted JSON: the same scene always gives the same string."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str) -> Scene:
        """From :meth:`to_dict` output (or its JSON string)."""
        if isinstance(data, str):
            data = json.loads(data)
        return cls(tuple(ShapeObject.from_dict(item) for item in data["objects"]))


def random_scene(rng: np.random.Generator) -> Scene:
    """Draw a scene: object count uniform in 1-4, distinct cells, independent uniform attributes."""
    count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    cells = rng.choice(len(POSITIONS), size=count, replace=False)
    objects = []
    for cell in cells:
        objects.append(
            ShapeObject(
                shape=SHAPES[int(rng.integers(len(SHAPES)))],
                color=COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))],
                size=SIZES[int(rng.integers(len(SIZES)))],
                position=POSITIONS[int(cell)],
            )
        )
    return Scene(tuple(objects))


def scene_from_seed(seed: int | Sequence[int]) -> Scene:
    """The scene of ``seed`` (an int or a sequence of ints fed to numpy's SeedSequence)."""
    return random_scene(np.random.default_rng(np.random.SeedSequence(seed)))


def complete_scene(scene: Scene, seed: int) -> Scene:
    """Fill unknown attributes deterministically from ``seed`` and make the scene renderable.

    Used to render partial captions: unknown shape/colour/size are drawn uniformly, objects
    without a position (or whose cell is already taken) go to free cells in a seeded order,
    and objects beyond the 9 cells are dropped.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, 0x5C3E]))
    free = [int(c) for c in rng.permutation(len(POSITIONS))]
    taken: set[int] = set()
    placed: list[ShapeObject] = []
    pending: list[ShapeObject] = []
    for obj in scene.objects:  # canonical order: known positions first
        if obj.cell is not None and obj.cell not in taken:
            taken.add(obj.cell)
            placed.append(obj)
        else:
            pending.append(obj)
    free = [c for c in free if c not in taken]
    for obj, cell in zip(pending, free):
        placed.append(
            ShapeObject(obj.shape, obj.color, obj.size, POSITIONS[cell])
        )
    filled = []
    for obj in placed:
        # Draw all three every time so one object's known values never shift another's draws.
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        filled.append(
            ShapeObject(obj.shape or shape, obj.color or color, obj.size or size, obj.position)
        )
    return Scene(tuple(filled))
