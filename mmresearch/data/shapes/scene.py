"""Scenes of the procedural shapes world: sampling, canonical descriptions, labels, QA, negatives.

A scene holds 1-3 objects, each a (shape, colour, size) triple with a jittered position and radius,
in one of five layouts:

* ``region`` (1 object): the object sits in one of the 9 cells of a 3x3 grid ("top left", ...).
* ``horizontal`` / ``vertical`` (2 objects): side by side (left, right) or one above the other.
* ``row`` / ``column`` (3 objects): in a row (left to right) or a column (top to bottom).

``Scene.objects`` is always in *canonical order*: left to right for ``horizontal``/``row``, top to
bottom for ``vertical``/``column``. Geometry is in fractions of the image side (``x`` right, ``y``
down), so a scene renders at any resolution.

Rules:

* **No two identical objects in a scene** (same shape, colour and size). Otherwise "the red circle"
  would be ambiguous, and swapping two identical objects would give a "negative" that is still true.
  Objects that share one or two attributes are allowed (and frequent).
* The **canonical description** (:func:`describe`) is a bijection with :meth:`Scene.key`
  ``(layout, region, objects' attributes)``; positions/radii/background are nuisance variables.
* The **primary object** (for class labels) is the largest one by nominal size; ties are broken by
  the canonical order (the leftmost/topmost of the largest). Labels are ``(shape, colour, count)``:
  the primary object's shape and colour, and the number of objects (class ``count - 1``).
* A **hard negative** changes exactly one attribute of one object (shape, colour or size, to a value
  that does not duplicate another object) or swaps a relation (two objects trade places; a single
  object moves to another region). Its key always differs from the scene's, so its description is
  false for the scene.
* **Questions** are only asked when their answer is unambiguous: "what colour is the circle?" only
  if exactly one circle is present, objects are referred to by their shortest unique description.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np

from mmresearch.data.shapes.vocabulary import (
    CAPTION_TEMPLATES,
    COUNT_WORDS,
    HORIZONTAL_LAYOUTS,
    LAYOUTS,
    MAX_OBJECTS,
    QUESTION_TEMPLATES,
    REGION_NAMES,
    REGION_PHRASES,
    REGIONS,
    SHAPE_PLURALS,
    SIZE_RADIUS,
    ShapesVocab,
    article_for,
)

#: Names of the class-label kinds, in the column order of the label tensor.
LABEL_NAMES: tuple[str, ...] = ("shape", "colour", "count")
#: Names of the hard-negative kinds, indexed by ``neg_kind``.
NEG_KIND_NAMES: tuple[str, ...] = ("shape", "colour", "size", "relation")

#: Maximum position jitter of each object (fraction of the image side; 3.2 px at 64 px), reduced
#: for large objects to what their layout slot leaves (about 1.3 px at 64 px).
POSITION_JITTER = 0.05
#: Minimum gap between an object's bounding box and the image border (half the gap between objects).
EDGE_MARGIN = 0.017
#: Relative radius jitter of each object (+-10%).
SIZE_JITTER = 0.10

Attributes = tuple[str, str, str]  # (shape, colour, size)
SceneKey = tuple[str, Optional[str], tuple[Attributes, ...]]


@dataclass(frozen=True)
class SceneObject:
    """One object: attributes plus geometry (centre ``x``, ``y`` and bounding half-extent
    ``radius``, all as fractions of the image side)."""

    shape: str
    colour: str
    size: str
    x: float = 0.5
    y: float = 0.5
    radius: float = SIZE_RADIUS["small"]

    @property
    def attributes(self) -> Attributes:
        return (self.shape, self.colour, self.size)


@dataclass(frozen=True)
class Background:
    """Background of a scene: a tinted grey, an optional linear gradient and optional noise.

    ``rgb`` is the mean colour (0-255). ``gradient`` ``(gx, gy)`` adds ``gx * (x - 0.5) + gy * (y -
    0.5)`` to every channel. ``noise`` is the amplitude of a monochrome uniform noise in
    ``[-noise, noise]``, taken from a fixed texture bank at a place chosen by ``noise_seed``.
    """

    rgb: tuple[float, float, float] = (60.0, 60.0, 60.0)
    gradient: tuple[float, float] = (0.0, 0.0)
    noise: float = 0.0
    noise_seed: int = 0


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    layout: str
    region: Optional[str] = None
    background: Background = field(default_factory=Background)

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def key(self) -> SceneKey:
        """What the canonical description says: layout, region and ordered object attributes."""
        return (self.layout, self.region, tuple(o.attributes for o in self.objects))


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def _check_layout(layout: str, count: int, region: Optional[str]) -> None:
    if count < 1 or count > MAX_OBJECTS:
        raise ValueError(f"a scene has 1 to {MAX_OBJECTS} objects, got {count}")
    if layout not in LAYOUTS[count]:
        raise ValueError(f"layout {layout!r} does not fit {count} object(s); allowed: {list(LAYOUTS[count])}")
    if layout == "region":
        if region not in REGIONS:
            raise ValueError(f"a single-object scene needs a region from {list(REGIONS)}, got {region!r}")
    elif region is not None:
        raise ValueError(f"only single-object scenes have a region, got {region!r} for layout {layout!r}")


def layout_positions(
    layout: str,
    count: int,
    region: Optional[str] = None,
    rng: Optional[random.Random] = None,
    radii: Optional[Sequence[float]] = None,
) -> list[tuple[float, float]]:
    """Object centres (canonical order) for a layout, jittered when ``rng`` is given.

    Layout slots: the 3x3 cell centres (1/6, 1/2, 5/6) for ``region`` and ``row``/``column``; for
    two objects, a random separation in [0.34, 0.56] and shift in [-0.05, 0.05] along the axis. The
    whole group of a multi-object layout moves by up to 0.2 across the axis. Each object then moves
    by up to ``min(POSITION_JITTER, 1/6 - radius - EDGE_MARGIN)`` in x and y: slots are >= 1/3 apart
    and >= 1/6 from the border, so objects keep an ``EDGE_MARGIN`` (1 px at 64 px) to the border
    and twice that between each other (bounding boxes of half-extent ``radius``).
    """
    u = rng.uniform if rng is not None else (lambda a, b: 0.5 * (a + b))
    if layout == "region":
        col, row = REGIONS[region]  # type: ignore[index]
        centres = [((col + 0.5) / 3.0, (row + 0.5) / 3.0)]
    else:
        perp = 0.5 + u(-0.2, 0.2)
        if count == 2:
            sep, shift = u(0.34, 0.56), u(-0.05, 0.05)
            along = [0.5 + shift - sep / 2, 0.5 + shift + sep / 2]
        else:
            along = [1 / 6, 3 / 6, 5 / 6]
        if layout in HORIZONTAL_LAYOUTS:
            centres = [(a, perp) for a in along]
        else:
            centres = [(perp, a) for a in along]
    if rng is None:
        return centres
    if radii is None:
        radii = [SIZE_RADIUS["large"] * (1 + SIZE_JITTER)] * count
    out = []
    for (x, y), r in zip(centres, radii):
        j = max(0.0, min(POSITION_JITTER, 1 / 6 - r - EDGE_MARGIN))
        out.append((x + rng.uniform(-j, j), y + rng.uniform(-j, j)))
    return out


def make_scene(
    objects: Sequence[Attributes],
    layout: Optional[str] = None,
    region: Optional[str] = None,
    rng: Optional[random.Random] = None,
    background: Optional[Background] = None,
) -> Scene:
    """Builds a scene from attribute triples in canonical order (no jitter unless ``rng``).

    ``layout`` defaults to ``region``/``horizontal``/``row`` for 1/2/3 objects (``region`` to
    ``"center"``). Raises ``ValueError`` on unknown attribute values or two identical objects.
    """
    objects = [tuple(o) for o in objects]
    count = len(objects)
    if layout is None:
        layout = LAYOUTS.get(count, ("?",))[0]
    if layout == "region" and region is None:
        region = "center"
    _check_layout(layout, count, region)
    if len(set(objects)) != count:
        raise ValueError(f"a scene cannot hold two identical objects: {objects}")
    for shape, colour, size in objects:
        if size not in SIZE_RADIUS:
            raise ValueError(f"unknown size {size!r}; allowed: {list(SIZE_RADIUS)}")
    if rng is not None:
        radii = [SIZE_RADIUS[size] * (1.0 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)) for _, _, size in objects]
    else:
        radii = [SIZE_RADIUS[size] for _, _, size in objects]
    centres = layout_positions(layout, count, region, rng, radii)
    built = tuple(
        SceneObject(shape, colour, size, x, y, r) for (shape, colour, size), (x, y), r in zip(objects, centres, radii)
    )
    return Scene(built, layout, region, background if background is not None else Background())


def sample_background(rng: random.Random) -> Background:
    """Dark-to-mid tinted grey, gradient with probability 0.6, noise with probability 0.7.

    Every channel stays within about [5, 140], far below the >= 200 channel every object colour has.
    """
    grey = rng.uniform(25.0, 100.0)
    rgb = tuple(grey + rng.uniform(-12.0, 12.0) for _ in range(3))
    if rng.random() < 0.6:
        amplitude, angle = rng.uniform(5.0, 25.0), rng.uniform(0.0, 2 * math.pi)
        gradient = (amplitude * math.cos(angle), amplitude * math.sin(angle))
    else:
        gradient = (0.0, 0.0)
    noise = rng.uniform(2.0, 7.0) if rng.random() < 0.7 else 0.0
    return Background(rgb, gradient, noise, rng.getrandbits(31))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# Unique sampling of canonical scenes
# ----------------------------------------------------------------------------------------------


def scene_space_sizes(vocab: ShapesVocab) -> dict[int, int]:
    """Number of distinct canonical scenes per object count (no identical objects in a scene)."""
    n = vocab.num_objects
    return {1: n * len(REGIONS), 2: 2 * n * max(n - 1, 0), 3: 2 * n * max(n - 1, 0) * max(n - 2, 0)}


def _decode_keys(count: int, indices: np.ndarray, vocab: ShapesVocab) -> list[tuple[str, Optional[str], tuple[int, ...]]]:
    """Maps indices of the canonical scene space of one count to (layout, region, object ids)."""
    n = vocab.num_objects
    idx = indices.astype(np.int64)
    if count == 1:
        objs = [idx // len(REGIONS)]
        regions = idx % len(REGIONS)
        return [("region", REGION_NAMES[r], (int(o),)) for o, r in zip(objs[0], regions)]
    per_layout = scene_space_sizes(vocab)[count] // 2
    layout_idx, rem = idx // per_layout, idx % per_layout
    if count == 2:
        a, b = rem // (n - 1), rem % (n - 1)
        b = b + (b >= a)
        objs = [a, b]
    else:
        a, rem2 = rem // ((n - 1) * (n - 2)), rem % ((n - 1) * (n - 2))
        b, c = rem2 // (n - 2), rem2 % (n - 2)
        b = b + (b >= a)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        c = c + (c >= lo)
        c = c + (c >= hi)
        objs = [a, b, c]
    layouts = LAYOUTS[count]
    stacked = np.stack(objs, axis=1).tolist()
    return [(layouts[int(li)], None, tuple(o)) for li, o in zip(layout_idx, stacked)]


def _count_capacity(vocab: ShapesVocab, count_weights: Sequence[float]) -> np.ndarray:
    weights = np.asarray([float(w) for w in count_weights], dtype=np.float64)
    if weights.shape != (MAX_OBJECTS,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            f"data.count_weights must be {MAX_OBJECTS} non-negative weights (for 1..{MAX_OBJECTS} objects) "
            f"with a positive sum, got {list(count_weights)}"
        )
    space = scene_space_sizes(vocab)
    return np.array([space[c] if weights[c - 1] > 0 else 0 for c in range(1, MAX_OBJECTS + 1)])


def check_split_size(split: str, size: int, vocab: ShapesVocab, count_weights: Sequence[float] = (1, 1, 1)) -> None:
    """Raises ``ValueError`` naming the split when it asks for more unique scenes than exist."""
    capacity = _count_capacity(vocab, count_weights)
    if size > capacity.sum():
        detail = ", ".join(f"{c} object(s): {int(capacity[c - 1])}" for c in range(1, MAX_OBJECTS + 1))
        raise ValueError(
            f"split {split!r} asks for {size} unique scenes (data.{split}_size={size}) but only "
            f"{int(capacity.sum())} distinct scenes exist ({detail}) with data.shapes={list(vocab.shapes)}, "
            f"data.colours={list(vocab.colours)}, data.sizes={list(vocab.sizes)}, "
            f"data.count_weights={list(count_weights)}; lower data.{split}_size or allow more attribute values"
        )


def allocate_counts(
    size: int, vocab: ShapesVocab, count_weights: Sequence[float], rng: np.random.Generator, split: str = "?"
) -> np.ndarray:
    """Object count of each of ``size`` scenes: drawn from ``count_weights`` (for 1, 2, 3 objects),
    but only among counts that still have unused canonical scenes.

    Raises ``ValueError`` naming the split when more unique scenes are asked for than exist.
    """
    check_split_size(split, size, vocab, count_weights)
    capacity = _count_capacity(vocab, count_weights)
    weights = np.asarray([float(w) for w in count_weights], dtype=np.float64)
    counts = rng.choice(np.arange(1, MAX_OBJECTS + 1), size=size, p=weights / weights.sum())
    while True:
        used = np.array([(counts == c).sum() for c in range(1, MAX_OBJECTS + 1)])
        over = used > capacity
        if not over.any():
            return counts
        free = np.where(used < capacity, weights, 0.0)
        for c in np.nonzero(over)[0] + 1:
            positions = np.nonzero(counts == c)[0][capacity[c - 1] :]
            counts[positions] = rng.choice(np.arange(1, MAX_OBJECTS + 1), size=len(positions), p=free / free.sum())


def sample_scenes(
    size: int,
    vocab: ShapesVocab,
    count_weights: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int | Sequence[int] | np.random.SeedSequence = 0,
    split: str = "?",
    unique: bool = True,
) -> list[Scene]:
    """``size`` scenes, deterministic in ``seed``.

    With ``unique=True`` canonical descriptions are pairwise distinct: object counts follow
    :func:`allocate_counts` and, within each count, canonical scenes are drawn uniformly without
    replacement by index (exact for every count, no rejection loop needed). With ``unique=False``
    counts are drawn i.i.d. from ``count_weights`` and scenes with replacement, so the count mix
    stays as asked at any size (a scene may then come several times, each time rendered anew).
    Geometry jitter and backgrounds come from a separate stream of the same seed.
    """
    seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    # children derived without mutating ``seq`` (unlike ``seq.spawn``), so calls are repeatable
    count_seq, key_seq, geo_seq = (
        np.random.SeedSequence(seq.entropy, spawn_key=tuple(seq.spawn_key) + (i,)) for i in range(3)
    )
    count_rng = np.random.default_rng(count_seq)
    if unique:
        counts = allocate_counts(size, vocab, count_weights, count_rng, split)
    else:
        _count_capacity(vocab, count_weights)  # validates the weights
        weights = np.asarray([float(w) for w in count_weights], dtype=np.float64)
        counts = count_rng.choice(np.arange(1, MAX_OBJECTS + 1), size=size, p=weights / weights.sum())
    key_rng = np.random.default_rng(key_seq)
    keys: list = [None] * size
    space = scene_space_sizes(vocab)
    for count in range(1, MAX_OBJECTS + 1):
        positions = np.nonzero(counts == count)[0]
        if len(positions) == 0:
            continue
        indices = key_rng.choice(space[count], size=len(positions), replace=not unique)
        for pos, key in zip(positions.tolist(), _decode_keys(count, indices, vocab)):
            keys[pos] = key
    rng = random.Random(int(geo_seq.generate_state(1)[0]))
    scenes = []
    attributes = [vocab.object_attributes(i) for i in range(vocab.num_objects)]
    for layout, region, object_ids in keys:
        scenes.append(
            make_scene([attributes[i] for i in object_ids], layout, region, rng=rng, background=sample_background(rng))
        )
    return scenes


# ----------------------------------------------------------------------------------------------
# Descriptions
# ----------------------------------------------------------------------------------------------


def object_phrase(attributes: Attributes) -> str:
    """Canonical phrase of an object: ``"a small red circle"``."""
    shape, colour, size = attributes
    return f"{article_for(size)} {size} {colour} {shape}"


def describe(scene: Scene) -> str:
    """The canonical description: the first template of the layout with canonical words.

    Two scenes have the same canonical description iff they have the same :attr:`Scene.key`.
    """
    template = CAPTION_TEMPLATES[scene.layout][0].text
    region = REGION_PHRASES[scene.region][0] if scene.region is not None else ""
    return template.format(*[object_phrase(o.attributes) for o in scene.objects], r=region)


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------

_SIZE_RANK = {"small": 0, "large": 1}


def primary_object(scene: Scene) -> SceneObject:
    """The largest object by nominal size; ties -> first in canonical order."""
    return max(scene.objects, key=lambda o: _SIZE_RANK[o.size])  # max keeps the first of equals


def scene_labels(scene: Scene, vocab: ShapesVocab) -> tuple[int, int, int]:
    """Class labels in :data:`LABEL_NAMES` order: primary shape, primary colour, count - 1."""
    primary = primary_object(scene)
    return (vocab.shapes.index(primary.shape), vocab.colours.index(primary.colour), scene.count - 1)


def class_names(vocab: ShapesVocab) -> dict[str, list[str]]:
    return {"shape": list(vocab.shapes), "colour": list(vocab.colours), "count": list(COUNT_WORDS[1:])}


# ----------------------------------------------------------------------------------------------
# Hard negatives
# ----------------------------------------------------------------------------------------------


def _attribute_options(scene: Scene, vocab: ShapesVocab, kind: str) -> list[tuple[int, list[str]]]:
    """For an attribute kind: (object index, values it may change to) with at least one value."""
    slot = {"shape": 0, "colour": 1, "size": 2}[kind]
    values = {"shape": vocab.shapes, "colour": vocab.colours, "size": vocab.sizes}[kind]
    existing = {o.attributes for o in scene.objects}
    options = []
    for i, obj in enumerate(scene.objects):
        attrs = obj.attributes
        allowed = []
        for v in values:
            if v == attrs[slot]:
                continue
            new = attrs[:slot] + (v,) + attrs[slot + 1 :]
            if new not in existing:
                allowed.append(v)
        if allowed:
            options.append((i, allowed))
    return options


def feasible_negative_kinds(scene: Scene, vocab: ShapesVocab) -> list[str]:
    """Kinds of hard negative possible for ``scene`` (``relation`` always is)."""
    kinds = []
    objs = [o.attributes for o in scene.objects]
    for slot, (kind, values) in enumerate((("shape", vocab.shapes), ("colour", vocab.colours), ("size", vocab.sizes))):
        for i, attrs in enumerate(objs):
            # values an object could take that another object (same other two attributes) holds
            taken = sum(
                1 for j, other in enumerate(objs) if j != i and all(other[k] == attrs[k] for k in range(3) if k != slot)
            )
            if len(values) - 1 - taken > 0:
                kinds.append(kind)
                break
    return kinds + ["relation"]


def hard_negative(scene: Scene, vocab: ShapesVocab, rng: random.Random, kind: Optional[str] = None) -> tuple[str, Scene]:
    """A scene differing from ``scene`` in exactly one attribute of one object or in one relation.

    ``kind`` is drawn uniformly among the feasible kinds when not given. Returns ``(kind, scene)``;
    the negative's key always differs from the scene's (so its captions are false for the scene).
    """
    feasible = feasible_negative_kinds(scene, vocab)
    if kind is None:
        kind = rng.choice(feasible)
    elif kind not in feasible:
        raise ValueError(f"negative kind {kind!r} is not possible for this scene; feasible: {feasible}")
    objects = list(scene.objects)
    if kind == "relation":
        if scene.count == 1:
            region = rng.choice([r for r in REGION_NAMES if r != scene.region])
            (x, y), = layout_positions("region", 1, region)
            return kind, replace(scene, objects=(replace(objects[0], x=x, y=y),), region=region)
        i, j = sorted(rng.sample(range(scene.count), 2))
        # the objects trade places (each keeps its own size and radius)
        oi, oj = objects[i], objects[j]
        objects[i] = replace(oj, x=oi.x, y=oi.y)
        objects[j] = replace(oi, x=oj.x, y=oj.y)
        return kind, replace(scene, objects=tuple(objects))
    i, allowed = rng.choice(_attribute_options(scene, vocab, kind))
    value = rng.choice(allowed)
    changes = {kind: value}
    if kind == "size":
        changes["radius"] = objects[i].radius * SIZE_RADIUS[value] / SIZE_RADIUS[objects[i].size]
    objects[i] = replace(objects[i], **changes)
    return kind, replace(scene, objects=tuple(objects))


# ----------------------------------------------------------------------------------------------
# Questions and answers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    qtype: str
    #: answers of one question type are balanced over groups when sampling (e.g. yes vs no)
    group: str = ""


#: Question types grouped into families; sampling is uniform over the families a scene supports.
QUESTION_FAMILIES: dict[str, str] = {
    "count": "count",
    "count_colour": "count_attribute",
    "count_shape": "count_attribute",
    "colour_of_shape": "colour",
    "colour_of_sized_shape": "colour",
    "shape_of_colour": "shape",
    "size_of": "size",
    "exists": "exists",
    "left_of": "relation",
    "right_of": "relation",
    "above": "relation",
    "below": "relation",
    "region": "region",
}


def reference(scene: Scene, index: int) -> str:
    """Shortest unique description of an object: ``"circle"``, ``"red circle"`` or
    ``"small red circle"`` (unique because a scene never holds two identical objects)."""
    obj = scene.objects[index]
    others = [o for k, o in enumerate(scene.objects) if k != index]
    if all(o.shape != obj.shape for o in others):
        return obj.shape
    if all((o.colour, o.shape) != (obj.colour, obj.shape) for o in others):
        return f"{obj.colour} {obj.shape}"
    return f"{obj.size} {obj.colour} {obj.shape}"


def candidate_questions(scene: Scene, vocab: ShapesVocab) -> list[QAPair]:
    """Every question (canonical wording, all templates) with an unambiguous answer for ``scene``."""
    qa: list[QAPair] = []
    objs = scene.objects

    def add(qtype: str, answer: str, group: str = "", **slots: str) -> None:
        for template in QUESTION_TEMPLATES[qtype]:
            qa.append(QAPair(template.format(**slots), answer, qtype, group))

    def yes_no(flag: bool) -> str:
        return "yes" if flag else "no"

    add("count", COUNT_WORDS[scene.count])
    for c in vocab.colours:
        n = sum(o.colour == c for o in objs)
        add("count_colour", COUNT_WORDS[n], group=str(n > 0), c=c)
    for s in vocab.shapes:
        n = sum(o.shape == s for o in objs)
        add("count_shape", COUNT_WORDS[n], group=str(n > 0), ss=SHAPE_PLURALS[s])
    for s in vocab.shapes:
        matching = [o for o in objs if o.shape == s]
        if len(matching) == 1:
            add("colour_of_shape", matching[0].colour, s=s)
        elif len(matching) > 1:
            for z in vocab.sizes:
                sized = [o for o in matching if o.size == z]
                if len(sized) == 1:
                    add("colour_of_sized_shape", sized[0].colour, s=s, z=z)
    for c in vocab.colours:
        matching = [o for o in objs if o.colour == c]
        if len(matching) == 1:
            add("shape_of_colour", matching[0].shape, c=c)
    for c in vocab.colours:
        for s in vocab.shapes:
            matching = [o for o in objs if (o.colour, o.shape) == (c, s)]
            if len(matching) == 1:
                add("size_of", matching[0].size, c=c, s=s)
            add("exists", yes_no(bool(matching)), group=yes_no(bool(matching)), c=c, s=s)
    if scene.count > 1:
        refs = [reference(scene, i) for i in range(scene.count)]
        before, after = ("left_of", "right_of") if scene.layout in HORIZONTAL_LAYOUTS else ("above", "below")
        for i in range(scene.count):
            for j in range(scene.count):
                if i != j:
                    add(before, yes_no(i < j), group=yes_no(i < j), x=refs[i], y=refs[j])
                    add(after, yes_no(i > j), group=yes_no(i > j), x=refs[i], y=refs[j])
    else:
        ref = reference(scene, 0)
        for region in REGION_NAMES:
            flag = region == scene.region
            add("region", yes_no(flag), group=yes_no(flag), x=ref, r=REGION_PHRASES[region][0])
    return qa


def _question(qtype: str, answer: str, rng: random.Random, **slots: str) -> QAPair:
    templates = QUESTION_TEMPLATES[qtype]
    template = templates[rng.randrange(len(templates))] if len(templates) > 1 else templates[0]
    return QAPair(template.format(**slots), answer, qtype)


def sample_questions(scene: Scene, vocab: ShapesVocab, n: int, rng: random.Random) -> list[QAPair]:
    """``n`` questions about different things, each in :func:`candidate_questions`.

    A family (count, count of an attribute, colour, shape, size, existence, relation, region) is
    drawn uniformly among those the scene supports, then a question of it; yes/no answers and
    present/absent attribute counts are balanced 50/50. Cheap: nothing is enumerated.
    """
    objs = scene.objects
    shape_count: dict[str, int] = {}
    colour_count: dict[str, int] = {}
    pair_count: dict[tuple[str, str], int] = {}
    for o in objs:
        shape_count[o.shape] = shape_count.get(o.shape, 0) + 1
        colour_count[o.colour] = colour_count.get(o.colour, 0) + 1
        pair_count[(o.colour, o.shape)] = pair_count.get((o.colour, o.shape), 0) + 1
    colour_qs = [("colour_of_shape", o.colour, {"s": o.shape}) for o in objs if shape_count[o.shape] == 1]
    for o in objs:
        if shape_count[o.shape] > 1 and sum(p.shape == o.shape and p.size == o.size for p in objs) == 1:
            colour_qs.append(("colour_of_sized_shape", o.colour, {"s": o.shape, "z": o.size}))
    shape_qs = [("shape_of_colour", o.shape, {"c": o.colour}) for o in objs if colour_count[o.colour] == 1]
    size_qs = [("size_of", o.size, {"c": o.colour, "s": o.shape}) for o in objs if pair_count[(o.colour, o.shape)] == 1]

    def count_attribute() -> tuple:
        if rng.random() < 0.5:
            values, counts, qtype, slot = vocab.colours, colour_count, "count_colour", "c"
        else:
            values, counts, qtype, slot = vocab.shapes, shape_count, "count_shape", "ss"
        present = [v for v in values if v in counts]
        absent = [v for v in values if v not in counts]
        v = rng.choice(present if (rng.random() < 0.5 or not absent) else absent)
        value = SHAPE_PLURALS[v] if slot == "ss" else v
        return (qtype, COUNT_WORDS[counts.get(v, 0)], {slot: value})

    def exists() -> tuple:
        if rng.random() < 0.5 or len(pair_count) == len(vocab.colours) * len(vocab.shapes):
            c, s = rng.choice(list(pair_count))
            return ("exists", "yes", {"c": c, "s": s})
        while True:
            c, s = rng.choice(vocab.colours), rng.choice(vocab.shapes)
            if (c, s) not in pair_count:
                return ("exists", "no", {"c": c, "s": s})

    def relation() -> tuple:
        i, j = rng.sample(range(scene.count), 2)
        horizontal = scene.layout in HORIZONTAL_LAYOUTS
        before = rng.random() < 0.5
        qtype = ("left_of" if before else "right_of") if horizontal else ("above" if before else "below")
        answer = (i < j) if before else (i > j)
        return (qtype, "yes" if answer else "no", {"x": reference(scene, i), "y": reference(scene, j)})

    def region() -> tuple:
        r = scene.region if rng.random() < 0.5 else rng.choice([r for r in REGION_NAMES if r != scene.region])
        return ("region", "yes" if r == scene.region else "no", {"x": reference(scene, 0), "r": REGION_PHRASES[r][0]})

    families: list = [lambda: ("count", COUNT_WORDS[scene.count], {}), count_attribute, exists]
    for qs in (colour_qs, shape_qs, size_qs):
        if qs:
            families.append(lambda qs=qs: rng.choice(qs))
    families.append(relation if scene.count > 1 else region)

    chosen: list[QAPair] = []
    seen: set = set()
    for _ in range(50 * n):
        if len(chosen) == n:
            break
        qtype, answer, slots = families[rng.randrange(len(families))]()
        signature = (qtype, tuple(sorted(slots.items())))
        if signature in seen:
            continue
        seen.add(signature)
        chosen.append(_question(qtype, answer, rng, **slots))
    while len(chosen) < n:  # tiny vocabularies only
        chosen.append(chosen[len(chosen) % len(chosen)])
    return chosen
