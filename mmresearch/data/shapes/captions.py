"""Captions of shapes scenes from templates and synonyms, and a parser that inverts them.

Every caption describes the whole scene: every object with its size, colour and shape, and the
layout (the region of a single object, or the order of several). :func:`parse_caption` maps a
caption back to the :attr:`~mmresearch.data.shapes.scene.Scene.key` it states, which the tests use
to check that captions are true and hard negatives false (and which can score generated captions).
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import Optional

from mmresearch.data.shapes.scene import Scene, SceneKey
from mmresearch.data.shapes.vocabulary import (
    ALL_COLOURS,
    ALL_SHAPES,
    ALL_SIZES,
    ARTICLES,
    CAPTION_PREFIXES,
    CAPTION_TEMPLATES,
    COLOUR_SYNONYMS,
    OBJECT_FORMS,
    REGION_PHRASES,
    SHAPE_SYNONYMS,
    SIZE_SYNONYMS,
    article_for,
)


def _expand(weighted: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    return tuple(item for item, weight in weighted for _ in range(weight))


_FORMS = _expand(OBJECT_FORMS)
_ARTICLES = _expand(ARTICLES)
_PREFIXES = _expand(CAPTION_PREFIXES)


def _object_phrase(form: str, article: str, z: str, c: str, s: str) -> str:
    if article == "a":
        first = {"{z}": z, "{c}": c, "{s}": s}[form.split()[1]]
        article = article_for(first)
    return form.format(a=article, z=z, c=c, s=s)


@lru_cache(maxsize=None)
def object_phrases(shape: str, colour: str, size: str) -> tuple[str, ...]:
    """Every phrasing of an object, repeated by weight (uniform pick = the weighted distribution):
    form x article x size synonym x colour synonym x shape synonym."""
    return tuple(
        _object_phrase(form, article, z, c, s)
        for form in _FORMS
        for article in _ARTICLES
        for z in SIZE_SYNONYMS[size]
        for c in COLOUR_SYNONYMS[colour]
        for s in SHAPE_SYNONYMS[shape]
    )


@lru_cache(maxsize=None)
def layout_templates(layout: str) -> tuple[str, ...]:
    """Every template of a layout with every prefix it may take, repeated by weight, such that a
    uniform pick first picks a template uniformly and then a prefix by its weight."""
    total = len(_PREFIXES)
    out: list[str] = []
    for template in CAPTION_TEMPLATES[layout]:
        if template.prefixable:
            out.extend(prefix + template.text for prefix in _PREFIXES)
        else:
            out.extend([template.text] * total)
    return tuple(out)


def _pick(options: tuple[str, ...], rng: random.Random) -> str:
    return options[int(rng.random() * len(options))]


def random_object_phrase(shape: str, colour: str, size: str, rng: random.Random) -> str:
    """An object phrase with a random form, article and synonyms, e.g. ``"a tiny disc in scarlet"``."""
    return _pick(object_phrases(shape, colour, size), rng)


def random_caption(scene: Scene, rng: random.Random) -> str:
    """One caption of ``scene``: a random template of its layout (uniform), prefix, phrasing and
    synonyms (by weight)."""
    template = _pick(layout_templates(scene.layout), rng)
    phrases = [_pick(object_phrases(o.shape, o.colour, o.size), rng) for o in scene.objects]
    region = _pick(REGION_PHRASES[scene.region], rng) if scene.region is not None else ""
    return template.format(*phrases, r=region)


def generate_captions(scene: Scene, n: int, rng: random.Random, max_tries: int = 20) -> list[str]:
    """``n`` captions of ``scene``, pairwise distinct unless the grammar runs out of phrasings."""
    captions: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(captions) < n:
        text = random_caption(scene, rng)
        tries += 1
        if text in seen and tries < max_tries * n:
            continue
        seen.add(text)
        captions.append(text)
    return captions


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def _alternation(words) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)) + ")"


@lru_cache(maxsize=1)
def _parser_tables():
    objects: dict[str, tuple[str, str, str]] = {}
    for shape in ALL_SHAPES:
        for colour in ALL_COLOURS:
            for size in ALL_SIZES:
                for form, _ in OBJECT_FORMS:
                    for z in SIZE_SYNONYMS[size]:
                        for c in COLOUR_SYNONYMS[colour]:
                            for s in SHAPE_SYNONYMS[shape]:
                                for article in ("a", "an", "one"):
                                    objects[form.format(a=article, z=z, c=c, s=s)] = (shape, colour, size)
    regions = {phrase: name for name, phrases in REGION_PHRASES.items() for phrase in phrases}
    word = {
        "{a}": _alternation(["a", "an", "one"]),
        "{z}": _alternation(w for ws in SIZE_SYNONYMS.values() for w in ws),
        "{c}": _alternation(w for ws in COLOUR_SYNONYMS.values() for w in ws),
        "{s}": _alternation(w for ws in SHAPE_SYNONYMS.values() for w in ws),
    }
    object_pattern = "(?:" + "|".join(
        " ".join(word.get(tok, re.escape(tok)) for tok in form.split()) for form, _ in OBJECT_FORMS
    ) + ")"
    region_pattern = _alternation(regions)
    prefix_pattern = "(?:" + "|".join(re.escape(p) for p, _ in CAPTION_PREFIXES if p) + ")?"
    compiled = []
    for layout, templates in CAPTION_TEMPLATES.items():
        for template in templates:
            pattern = re.escape(template.text)
            for i in range(3):
                pattern = pattern.replace(re.escape("{%d}" % i), f"(?P<o{i}>{object_pattern})")
            pattern = pattern.replace(re.escape("{r}"), f"(?P<r>{region_pattern})")
            if template.prefixable:
                pattern = prefix_pattern + pattern
            compiled.append((layout, re.compile(pattern)))
    return objects, regions, compiled


def parse_caption(text: str) -> list[SceneKey]:
    """The scene keys a caption can state (exactly one for every caption this module generates).

    Whitespace and case are normalised; an unparseable text gives ``[]``.
    """
    objects, regions, compiled = _parser_tables()
    text = " ".join(text.lower().split())
    keys: list[SceneKey] = []
    for layout, pattern in compiled:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        groups = match.groupdict()
        attrs = []
        for i in range(3):
            phrase = groups.get(f"o{i}")
            if phrase is not None:
                attrs.append(objects[phrase])
        region: Optional[str] = regions[groups["r"]] if groups.get("r") else None
        key = (layout, region, tuple(attrs))
        if key not in keys:
            keys.append(key)
    return keys
