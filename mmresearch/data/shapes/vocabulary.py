"""Words of the procedural shapes world: attributes, synonyms, layouts and templates.

Everything that names something lives here, so the caption grammar, the question grammar and the
tokenizer built from them (:func:`mmresearch.data.tokenizer.build_shapes_tokenizer`) agree.

The first word of every synonym list is the *canonical* word used in canonical descriptions,
questions, answers and class names.

Templates use ``{0}``, ``{1}``, ``{2}`` for the objects in canonical (spatial) order -- left to
right for horizontal layouts, top to bottom for vertical ones -- and ``{r}`` for the region phrase
of a single object. A template flagged ``prefixable`` starts with an object and may get one of
:data:`CAPTION_PREFIXES` in front.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

# --------------------------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------------------------

#: Every shape the renderer can draw, in canonical order.
ALL_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
#: Default shapes. A five-pointed star is a blob at the small size of a 64 px image, so the
#: default fifth shape is the cross (a plus sign); ``star`` can still be selected.
DEFAULT_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")

#: Object colours (RGB, 0-255). All are saturated or bright, with at least one channel >= 200, so
#: they stay far from the dark-to-mid grey backgrounds (every background channel is <= ~150).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (40, 200, 60),
    "blue": (45, 95, 245),
    "yellow": (245, 225, 35),
    "purple": (165, 60, 225),
    "orange": (255, 135, 15),
    "cyan": (35, 220, 230),
    "white": (245, 245, 245),
}
ALL_COLOURS: tuple[str, ...] = tuple(COLOURS)
DEFAULT_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan")

#: Nominal radius of each size, as a fraction of the image side. The radius is the half-extent of
#: the shape's bounding box; large is 1.82x small in diameter. Each object's radius is jittered by
#: +-10% around it (see :mod:`mmresearch.data.shapes.scene`).
SIZE_RADIUS: dict[str, float] = {"small": 0.065, "large": 0.118}
ALL_SIZES: tuple[str, ...] = ("small", "large")
DEFAULT_SIZES: tuple[str, ...] = ALL_SIZES

# --------------------------------------------------------------------------------------------
# Layouts and regions
# --------------------------------------------------------------------------------------------

#: Regions of the 3x3 grid for single-object scenes: name -> (column, row), 0 = left / top.
REGIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)

#: Layouts per object count. ``region``: one object in a cell of the 3x3 grid; ``horizontal`` /
#: ``vertical``: two objects side by side / one above the other; ``row`` / ``column``: three objects.
LAYOUTS: dict[int, tuple[str, ...]] = {1: ("region",), 2: ("horizontal", "vertical"), 3: ("row", "column")}
ALL_LAYOUTS: tuple[str, ...] = ("region", "horizontal", "vertical", "row", "column")
#: Layouts whose objects are ordered left to right (the others: top to bottom).
HORIZONTAL_LAYOUTS: frozenset[str] = frozenset({"horizontal", "row"})
MAX_OBJECTS = 3
COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three")

# --------------------------------------------------------------------------------------------
# Synonyms (first = canonical)
# --------------------------------------------------------------------------------------------

SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "disk"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus", "plus sign"),
    "star": ("star",),
}
SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "diamond": "diamonds",
    "cross": "crosses",
    "star": "stars",
}
COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet"),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("yellow",),
    "purple": ("purple", "violet"),
    "orange": ("orange",),
    "cyan": ("cyan", "turquoise"),
    "white": ("white",),
}
SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
#: Region phrases; the first is canonical. Used after an object ("a red circle in the center").
REGION_PHRASES: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left", "in the top left corner", "in the upper left", "in the upper left corner"),
    "top": ("at the top", "at the top center", "in the top middle", "at the top of the image"),
    "top right": ("in the top right", "in the top right corner", "in the upper right", "in the upper right corner"),
    "left": ("on the left", "on the left side", "in the middle left", "on the left of the image"),
    "center": ("in the center", "in the middle", "at the center", "in the center of the image"),
    "right": ("on the right", "on the right side", "in the middle right", "on the right of the image"),
    "bottom left": ("in the bottom left", "in the bottom left corner", "in the lower left", "in the lower left corner"),
    "bottom": ("at the bottom", "at the bottom center", "in the bottom middle", "at the bottom of the image"),
    "bottom right": (
        "in the bottom right",
        "in the bottom right corner",
        "in the lower right",
        "in the lower right corner",
    ),
}

# --------------------------------------------------------------------------------------------
# Caption templates
# --------------------------------------------------------------------------------------------

#: Object phrase forms: ``{a}`` article, ``{z}`` size, ``{c}`` colour, ``{s}`` shape; with weights.
OBJECT_FORMS: tuple[tuple[str, int], ...] = (
    ("{a} {z} {c} {s}", 5),
    ("{a} {z} {s} in {c}", 1),
)
#: Articles with weights ("a" becomes "an" before a vowel).
ARTICLES: tuple[tuple[str, int], ...] = (("a", 6), ("one", 1))
#: Optional prefixes of templates that start with an object; "" (no prefix) is the most frequent.
CAPTION_PREFIXES: tuple[tuple[str, int], ...] = (
    ("", 6),
    ("there is ", 1),
    ("an image of ", 1),
    ("a picture of ", 1),
    ("a drawing of ", 1),
)


@dataclass(frozen=True)
class CaptionTemplate:
    text: str
    prefixable: bool = True


def _t(text: str, prefixable: bool | None = None) -> CaptionTemplate:
    if prefixable is None:
        prefixable = text.startswith("{") and not text.startswith("{r}")
    return CaptionTemplate(text, prefixable)


#: Templates per layout. The longest caption (11 template tokens + 3 objects of at most 6 tokens +
#: [CLS]/[SEP]) is 31 tokens with the shapes tokenizer, so the default max_text_length=32 never
#: truncates; long templates are therefore not prefixable. The first template of each layout (with canonical words, article "a",
#: the first object form and no prefix) is the canonical description.
CAPTION_TEMPLATES: dict[str, tuple[CaptionTemplate, ...]] = {
    "region": (
        _t("{0} {r}"),
        _t("{r} there is {0}"),
        _t("{0} is {r}", prefixable=False),
        _t("{0} located {r}"),
        _t("{0} placed {r}"),
    ),
    "horizontal": (
        _t("{0} to the left of {1}"),
        _t("{0} left of {1}"),
        _t("{1} to the right of {0}"),
        _t("{1} right of {0}"),
        _t("{0} on the left and {1} on the right"),
        _t("{1} on the right and {0} on the left"),
        _t("{0} is to the left of {1}", prefixable=False),
        _t("{1} is to the right of {0}", prefixable=False),
        _t("{0} and {1}, from left to right"),
        _t("{1} and {0}, from right to left"),
    ),
    "vertical": (
        _t("{0} above {1}"),
        _t("{0} over {1}"),
        _t("{1} below {0}"),
        _t("{1} under {0}"),
        _t("{1} beneath {0}"),
        _t("{0} at the top and {1} at the bottom"),
        _t("{1} at the bottom and {0} at the top"),
        _t("{0} is above {1}", prefixable=False),
        _t("{1} is below {0}", prefixable=False),
        _t("{0} and {1}, from top to bottom"),
        _t("{1} and {0}, from bottom to top"),
    ),
    "row": (
        _t("{0}, {1} and {2} from left to right"),
        _t("{2}, {1} and {0} from right to left"),
        _t("from left to right: {0}, {1} and {2}"),
        _t("from right to left: {2}, {1} and {0}"),
        _t("{0} on the left, {1} in the middle and {2} on the right", prefixable=False),
        _t("{2} on the right, {1} in the middle and {0} on the left", prefixable=False),
        _t("{1} between {0} on the left and {2} on the right"),
        _t("{1} between {2} on the right and {0} on the left"),
        _t("{0} left of {1}, which is left of {2}"),
        _t("{2} right of {1}, which is right of {0}"),
        _t("a row of {0}, {1} and {2} from left to right", prefixable=False),
    ),
    "column": (
        _t("{0}, {1} and {2} from top to bottom"),
        _t("{2}, {1} and {0} from bottom to top"),
        _t("from top to bottom: {0}, {1} and {2}"),
        _t("from bottom to top: {2}, {1} and {0}"),
        _t("{0} at the top, {1} in the middle and {2} at the bottom", prefixable=False),
        _t("{2} at the bottom, {1} in the middle and {0} at the top", prefixable=False),
        _t("{1} between {0} above and {2} below"),
        _t("{1} between {2} below and {0} above"),
        _t("{0} above {1}, which is above {2}"),
        _t("{2} below {1}, which is below {0}"),
        _t("a column of {0}, {1} and {2} from top to bottom", prefixable=False),
    ),
}

# --------------------------------------------------------------------------------------------
# Question templates (canonical words only; answers come from the closed answer vocabulary)
# --------------------------------------------------------------------------------------------

#: ``{s}`` shape, ``{ss}`` plural shape, ``{c}`` colour, ``{z}`` size, ``{x}``/``{y}`` unique
#: references to objects (e.g. "red circle"), ``{r}`` canonical region phrase.
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "count": ("how many objects are there?", "how many shapes are in the image?", "how many shapes can you see?"),
    "count_colour": ("how many {c} objects are there?", "how many {c} shapes are in the image?"),
    "count_shape": ("how many {ss} are there?", "how many {ss} are in the image?"),
    "colour_of_shape": ("what colour is the {s}?", "what is the colour of the {s}?"),
    "colour_of_sized_shape": ("what colour is the {z} {s}?", "what is the colour of the {z} {s}?"),
    "shape_of_colour": ("what shape is the {c} object?", "what is the shape of the {c} object?"),
    "size_of": ("what size is the {c} {s}?", "is the {c} {s} small or large?"),
    "exists": ("is there a {c} {s}?", "is there a {c} {s} in the image?"),
    "left_of": ("is the {x} to the left of the {y}?", "is the {x} left of the {y}?"),
    "right_of": ("is the {x} to the right of the {y}?", "is the {x} right of the {y}?"),
    "above": ("is the {x} above the {y}?",),
    "below": ("is the {x} below the {y}?",),
    "region": ("is the {x} {r}?",),
}
ANSWER_YES_NO: tuple[str, ...] = ("no", "yes")


def article_for(word: str) -> str:
    """``"an"`` before a vowel sound (good enough for this grammar), else ``"a"``."""
    return "an" if word[:1] in "aeiou" else "a"


def _check_choice(key: str, values: Sequence[str], allowed: Sequence[str], min_count: int = 1) -> tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f"data.{key} must be a list of names, got the string {values!r}; allowed: {list(allowed)}")
    values = tuple(str(v) for v in values)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"data.{key}: unknown value(s) {unknown}; allowed: {list(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"data.{key}: duplicate values in {list(values)}")
    if len(values) < min_count:
        raise ValueError(f"data.{key} needs at least {min_count} value(s) from {list(allowed)}, got {list(values)}")
    # keep the canonical order so class indices do not depend on how the list was written
    return tuple(v for v in allowed if v in values)


@dataclass(frozen=True)
class ShapesVocab:
    """The attribute values a dataset uses (a subset of everything the grammar knows).

    Class indices, the object index space used for sampling, and the answer vocabulary all follow
    the canonical order of :data:`ALL_SHAPES`, :data:`ALL_COLOURS` and :data:`ALL_SIZES`.
    """

    shapes: tuple[str, ...] = DEFAULT_SHAPES
    colours: tuple[str, ...] = DEFAULT_COLOURS
    sizes: tuple[str, ...] = DEFAULT_SIZES

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", _check_choice("shapes", self.shapes, ALL_SHAPES))
        object.__setattr__(self, "colours", _check_choice("colours", self.colours, ALL_COLOURS))
        object.__setattr__(self, "sizes", _check_choice("sizes", self.sizes, ALL_SIZES))

    @property
    def num_objects(self) -> int:
        """Number of distinct (shape, colour, size) objects."""
        return len(self.shapes) * len(self.colours) * len(self.sizes)

    def object_attributes(self, index: int) -> tuple[str, str, str]:
        """Decodes an object index in ``[0, num_objects)`` to ``(shape, colour, size)``."""
        nc, nz = len(self.colours), len(self.sizes)
        return self.shapes[index // (nc * nz)], self.colours[(index // nz) % nc], self.sizes[index % nz]

    @property
    def answer_vocab(self) -> tuple[str, ...]:
        """The closed answer vocabulary: no/yes, counts, colours, shapes, sizes."""
        return ANSWER_YES_NO + COUNT_WORDS + self.colours + self.shapes + self.sizes


def iter_grammar_texts() -> Iterable[str]:
    """Every word the caption and question grammar can produce (for all shapes and colours).

    The texts are fragments, not full captions; they cover the vocabulary, which is all a
    tokenizer trained on them needs.
    """
    for templates in CAPTION_TEMPLATES.values():
        for template in templates:
            yield template.text.replace("{0}", " ").replace("{1}", " ").replace("{2}", " ").replace("{r}", " ")
    for prefix, _ in CAPTION_PREFIXES:
        yield prefix
    for form, _ in OBJECT_FORMS:
        yield form.replace("{a}", " ").replace("{z}", " ").replace("{c}", " ").replace("{s}", " ")
    yield " ".join(["a", "an"] + [a for a, _ in ARTICLES])
    for table in (SHAPE_SYNONYMS, COLOUR_SYNONYMS, SIZE_SYNONYMS, REGION_PHRASES):
        for words in table.values():
            yield from words
    yield from SHAPE_PLURALS.values()
    yield from REGIONS
    for templates in QUESTION_TEMPLATES.values():
        for template in templates:
            yield template.format(s="", ss="", c="", z="", x="", y="", r="")
    yield " ".join(ANSWER_YES_NO + COUNT_WORDS + ALL_COLOURS + ALL_SHAPES + ALL_SIZES)
    yield "shape colour color size count object objects image"
