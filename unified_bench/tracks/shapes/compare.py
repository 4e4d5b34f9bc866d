"""Compare a predicted scene with the ground-truth scene: object-level F1, overall and per attribute.

Definitions (also in data_cards/shapes.md):

- **Matching.** True and predicted objects are paired one-to-one by the assignment that
  maximises, in this order of priority, (1) the number of pairs that agree on every
  attribute, (2) the total number of agreeing attributes, (3) the number of pairs in the
  same grid cell. An attribute agrees when both values are known and equal.
- **Overall F1** = 2 * (pairs agreeing on shape, colour, size and position) / (n_true + n_pred).
  Cells hold at most one true object, so this is the same as matching objects by grid cell
  and counting a cell right when its predicted object has every attribute right.
- **Per-attribute F1** for a in {shape, color, size, position} = 2 * (matched pairs agreeing
  on a) / (n_true + n_pred). Matching on all attributes, not on the cell, is what lets a
  reconstruction with the right objects in the wrong places score high on shape and colour
  and low on position.
- **Count** = 1 - |n_pred - n_true| / max(n_pred, n_true).
- **Attribute precision** (for captions, which may leave attributes unsaid) = agreeing
  matched values / predicted values that are known, per attribute and pooled.

With an empty truth and an empty prediction every score is 1; with exactly one of them
empty every score is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from unified_bench.tracks.shapes.scene import ATTRIBUTES, Scene, ShapeObject

#: sub-score names of the shapes-attr metric, in report order
SUB_SCORES: tuple[str, ...] = (*ATTRIBUTES, "count")


def agreement(a: ShapeObject, b: ShapeObject) -> dict[str, bool]:
    """Which attributes two objects share (unknown never agrees)."""
    out = {}
    for name in ATTRIBUTES:
        va, vb = getattr(a, name), getattr(b, name)
        out[name] = va is not None and va == vb
    return out


def match_objects(truth: Scene, pred: Scene) -> list[tuple[int, int]]:
    """Optimal one-to-one pairs (true index, predicted index); see the module docstring."""
    if not truth.objects or not pred.objects:
        return []
    n_pairs = min(len(truth), len(pred))
    # lexicographic priorities as one weight: each lower level sums to less than one unit above
    w_full, w_attr, w_cell = 100.0 * (n_pairs + 1) * 5, 5.0 * (n_pairs + 1) / 4, 1.0
    weights = np.zeros((len(truth), len(pred)))
    for i, t in enumerate(truth.objects):
        for j, p in enumerate(pred.objects):
            agree = agreement(t, p)
            weights[i, j] = w_full * all(agree.values()) + w_attr * sum(agree.values()) + w_cell * agree["position"]
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [(int(i), int(j)) for i, j in zip(rows, cols)]


@dataclass(frozen=True)
class SceneComparison:
    """Counts and scores of one (truth, prediction) comparison."""

    n_true: int
    n_pred: int
    full_matches: int
    attribute_matches: dict[str, int]
    #: per attribute: how many predicted objects state it (not None)
    attribute_stated: dict[str, int] = field(default_factory=dict)

    @property
    def f1(self) -> float:
        return _f1(self.full_matches, self.n_true, self.n_pred)

    def attribute_f1(self, name: str) -> float:
        return _f1(self.attribute_matches[name], self.n_true, self.n_pred)

    @property
    def count_score(self) -> float:
        top = max(self.n_true, self.n_pred)
        return 1.0 if top == 0 else 1.0 - abs(self.n_pred - self.n_true) / top

    def sub_scores(self) -> dict[str, float]:
        """The metric's sub-scores: per-attribute F1 and the count score."""
        return {**{name: self.attribute_f1(name) for name in ATTRIBUTES}, "count": self.count_score}

    def attribute_precision(self, name: str | None = None) -> float | None:
        """Correct stated values / stated values (pooled over attributes when ``name`` is None)."""
        names = ATTRIBUTES if name is None else (name,)
        stated = sum(self.attribute_stated[n] for n in names)
        return None if stated == 0 else sum(self.attribute_matches[n] for n in names) / stated


def _f1(hits: int, n_true: int, n_pred: int) -> float:
    total = n_true + n_pred
    return 1.0 if total == 0 else 2.0 * hits / total


def compare_scenes(truth: Scene, pred: Scene) -> SceneComparison:
    """Compare ``pred`` with ``truth`` (see the module docstring for the definitions)."""
    matches = {name: 0 for name in ATTRIBUTES}
    full = 0
    for i, j in match_objects(truth, pred):
        agree = agreement(truth.objects[i], pred.objects[j])
        full += all(agree.values())
        for name, ok in agree.items():
            matches[name] += ok
    stated = {name: sum(getattr(o, name) is not None for o in pred.objects) for name in ATTRIBUTES}
    return SceneComparison(len(truth), len(pred), full, matches, stated)
