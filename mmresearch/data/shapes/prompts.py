"""Zero-shot prompt templates for the class labels of the built-in data (``{}`` = class name).

Only words of the built-in caption vocabulary are used, so the built-in tokenizer knows them. A
classifier averages the normalised text embeddings of every template of a class (CLIP's prompt
ensembling) and renormalises.
"""

from __future__ import annotations

from typing import Dict, List

from mmresearch.data.shapes.vocabulary import DEFAULT_SHAPES

ZERO_SHOT_TEMPLATES: Dict[str, List[str]] = {
    # the primary (largest) object's shape
    "shape": [
        "a {}",
        "a picture of a {}",
        "there is a {}",
        "an image of a big {}",
        "a drawing of a large {}",
    ],
    # the primary object's colour, ensembled over every shape word
    "colour": [f"a {{}} {shape}" for shape in DEFAULT_SHAPES] + ["something {} in the image"],
    # the number of objects
    "count": ["{} shapes", "there are {} objects", "a picture of {} objects"],
}
