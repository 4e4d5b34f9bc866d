"""One caption grammar for the Shapes track: detail levels, paraphrases and a parser.

Canonical forms (what :func:`caption` writes)::

    long:  "Three objects: a large red circle in the top left, a small blue square in the
            center and a large green triangle in the bottom right."
    short: "Three objects: a red circle, a green triangle and a blue square."

A caption is an optional header ("<count> objects:") followed by object clauses joined by
", ", "; " or " and ". Each clause names one object: article, optional size, colour, shape,
then (long only) its position. Long captions list objects by grid cell (row-major); short
captions give only shapes and colours, sorted by shape then colour, so their order leaks no
position. :func:`paraphrase` draws, from a seed, a header variant, a clause order, synonyms
(big/little, upper/lower, middle/centre...) and joiners from the same grammar.

:func:`parse` inverts the grammar tolerantly: it splits the text into clauses, and each
clause that names a shape becomes an object whose unnamed attributes are ``None``. It
reads canonical captions exactly, paraphrases fully, and partial or free-form captions as
far as they use the grammar's words (a model's caption, a short caption).
"""

from __future__ import annotations

import re

import numpy as np

from unified_bench.tracks.shapes.scene import COLOR_NAMES, POSITIONS, SHAPES, Scene, ShapeObject

DETAILS: tuple[str, ...] = ("short", "long")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# --- synonyms the paraphraser writes and the parser reads --------------------------------
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
_ROW_WORDS = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}
_MIDDLE_WORDS = ("center", "centre", "middle")
#: how a position may be phrased in a paraphrase (canonical first)
_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left", "in the upper left", "at the top left", "in the top left corner", "in the upper-left corner"),
    "top center": ("in the top center", "at the top", "in the top middle", "at the top centre", "in the upper middle"),
    "top right": ("in the top right", "in the upper right", "at the top right", "in the top right corner", "in the upper-right corner"),
    "center left": ("in the center left", "on the left", "in the middle left", "at the centre left", "on the left side"),
    "center": ("in the center", "in the middle", "at the centre", "in the center of the image", "in the very middle"),
    "center right": ("in the center right", "on the right", "in the middle right", "at the centre right", "on the right side"),
    "bottom left": ("in the bottom left", "in the lower left", "at the bottom left", "in the bottom left corner", "in the lower-left corner"),
    "bottom center": ("in the bottom center", "at the bottom", "in the bottom middle", "at the bottom centre", "in the lower middle"),
    "bottom right": ("in the bottom right", "in the lower right", "at the bottom right", "in the bottom right corner", "in the lower-right corner"),
}
_HEADERS = (
    "{N} {objects}: ",
    "There {are} {n} {objects}: ",
    "The image shows {n} {objects}: ",
    "A picture of {n} {objects}: ",
    "",
)
_JOINERS = ((", ", " and "), (", ", ", and "), ("; ", " and "), ("; ", "; "))

_WORD = re.compile(r"[a-z]+")
_CLAUSE_SPLIT = re.compile(r"[,;:.!?\n]+|\band\b|\bwith\b")
_NOUN_FORMS = {**{s: s for s in SHAPES}, **{s + "s": s for s in SHAPES}}
_COLOUR_FORMS = {c: c for c in COLOR_NAMES}
_SIZE_FORMS = {word: size for size, words in _SIZE_WORDS.items() for word in words}
_ROW_FORMS = {word: row for row, words in _ROW_WORDS.items() for word in words}
_NUMBER_FORMS = {word: i for i, word in enumerate(NUMBER_WORDS)} | {"a": 1, "an": 1}


def count_phrase(n: int, noun: str = "object") -> str:
    """'one object', 'three objects'."""
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} {noun}{'' if n == 1 else 's'}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(clauses: list[str], sep: str = ", ", last: str = " and ") -> str:
    if len(clauses) == 1:
        return clauses[0]
    return sep.join(clauses[:-1]) + last + clauses[-1]


def _sentence(header: str, body: str) -> str:
    text = header + body + "."
    return text[0].upper() + text[1:]


def short_order(scene: Scene) -> list[ShapeObject]:
    """Objects sorted by shape then colour (no position information in the order)."""
    return sorted(scene.objects, key=lambda o: (o.sort_key()[1], o.sort_key()[2], o.sort_key()[3], o.sort_key()[0]))


def caption(scene: Scene, detail: str = "long") -> str:
    """The canonical caption of ``scene`` at ``detail`` ('long' or 'short')."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, got {detail!r}")
    if not scene.objects:
        return "No objects."
    if detail == "long":
        if not scene.is_complete:
            raise ValueError("a long caption needs every attribute of every object")
        clauses = [f"a {o.size} {o.color} {o.shape} in the {o.position}" for o in scene.objects]
    else:
        clauses = [f"{_article(o.color)} {o.color} {o.shape}" for o in short_order(scene)]
    return _sentence(count_phrase(len(scene)) + ": ", _join(clauses))


def paraphrase(scene: Scene, detail: str = "long", seed: int = 0) -> str:
    """A seeded paraphrase of the caption at ``detail``; it parses back to the same objects."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}, got {detail!r}")
    if not scene.objects:
        return "No objects."
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, 0xCA9]))
    objects = [scene.objects[int(i)] for i in rng.permutation(len(scene))]
    noun = ("object", "shape")[int(rng.integers(2))]
    header = _HEADERS[int(rng.integers(len(_HEADERS)))].format(
        N=NUMBER_WORDS[len(scene)].capitalize(),
        n=NUMBER_WORDS[len(scene)],
        are="is" if len(scene) == 1 else "are",
        objects=noun if len(scene) == 1 else noun + "s",
    )
    clauses = []
    for obj in objects:
        words = [obj.color, obj.shape]
        if detail == "long":
            sizes = _SIZE_WORDS[obj.size]
            words.insert(0, sizes[int(rng.integers(len(sizes)))])
        phrase = " ".join(words)
        phrase = f"{_article(phrase)} {phrase}"
        if detail == "long":
            options = _POSITION_PHRASES[obj.position]
            phrase += " " + options[int(rng.integers(len(options)))]
        clauses.append(phrase)
    sep, last = _JOINERS[int(rng.integers(len(_JOINERS)))]
    return _sentence(header, _join(clauses, sep, last))


def _position(words: list[str]) -> str | None:
    """'upper left' -> 'top left', 'at the bottom' -> 'bottom center', no position words -> None."""
    row = next((_ROW_FORMS[w] for w in words if w in _ROW_FORMS), None)
    col = next((w for w in words if w in ("left", "right")), None)
    if row is None and col is None:
        return "center" if any(w in _MIDDLE_WORDS for w in words) else None
    row, col = row or "center", col or "center"
    return "center" if row == col == "center" else f"{row} {col}"


def _clause_objects(words: list[str]) -> list[ShapeObject]:
    """The object(s) one clause names: 'two red circles' gives two objects."""
    shape_at = next((i for i, w in enumerate(words) if w in _NOUN_FORMS), None)
    if shape_at is None:
        return []
    shape = _NOUN_FORMS[words[shape_at]]
    color = next((_COLOUR_FORMS[w] for w in words if w in _COLOUR_FORMS), None)
    size = next((_SIZE_FORMS[w] for w in words if w in _SIZE_FORMS), None)
    position = _position(words)
    copies = 1
    if words[shape_at].endswith("s"):  # a plural noun: its count is the number word before it
        copies = next((_NUMBER_FORMS[w] for w in words[:shape_at] if w in _NUMBER_FORMS), 1)
    obj = ShapeObject(shape, color, size, position)
    return [obj] * max(1, min(copies, len(POSITIONS)))


def parse(text: str) -> Scene:
    """Parse a caption of the grammar (canonical, paraphrased, partial) into a scene.

    Attributes a clause does not name are ``None``; clauses that name no shape are skipped
    (headers, words the grammar does not know). Never raises on free text.
    """
    objects: list[ShapeObject] = []
    for clause in _CLAUSE_SPLIT.split(text.lower().replace("-", " ")):
        objects.extend(_clause_objects(_WORD.findall(clause)))
    return Scene(tuple(objects))


def vocabulary() -> list[str]:
    """Every word the grammar writes, lower-cased and sorted (for word-level tokenizers)."""
    texts = ["no objects", "and", "a an"]
    texts += list(SHAPES) + [s + "s" for s in SHAPES] + list(COLOR_NAMES) + list(POSITIONS)
    texts += [w for options in _SIZE_WORDS.values() for w in options]
    texts += [p for phrases in _POSITION_PHRASES.values() for p in phrases]
    for n in range(1, len(NUMBER_WORDS)):
        for noun in ("object", "shape"):
            for template in _HEADERS:
                texts.append(
                    template.format(
                        N=NUMBER_WORDS[n], n=NUMBER_WORDS[n], are="is" if n == 1 else "are",
                        objects=noun if n == 1 else noun + "s",
                    )
                )
    words: set[str] = set()
    for text in texts:
        words |= set(_WORD.findall(text.lower().replace("-", " ")))
    return sorted(words)
