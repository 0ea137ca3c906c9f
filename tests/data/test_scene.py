"""Scenes: seeded unique sampling, canonical descriptions, labels, hard negatives, questions."""

import random
from collections import Counter

import numpy as np
import pytest

from mmresearch.data.shapes.scene import (
    LABEL_NAMES,
    NEG_KIND_NAMES,
    allocate_counts,
    candidate_questions,
    describe,
    feasible_negative_kinds,
    hard_negative,
    make_scene,
    primary_object,
    sample_questions,
    sample_scenes,
    scene_labels,
    scene_space_sizes,
)
from mmresearch.data.shapes.vocabulary import ShapesVocab

VOCAB = ShapesVocab()


@pytest.fixture(scope="module")
def scenes():
    return sample_scenes(3000, VOCAB, seed=7, split="train")


def test_scene_space_sizes():
    sizes = scene_space_sizes(VOCAB)
    assert sizes[1] == 5 * 7 * 2 * 9 == 630
    assert sizes[2] == 2 * 70 * 69  # no two identical objects in a scene
    assert sizes[3] == 2 * 70 * 69 * 68


def test_sampling_is_deterministic_by_seed():
    a = sample_scenes(500, VOCAB, seed=3)
    b = sample_scenes(500, VOCAB, seed=3)
    c = sample_scenes(500, VOCAB, seed=4)
    assert a == b  # keys, geometry and backgrounds
    assert [s.key for s in a] != [s.key for s in c]


def test_canonical_descriptions_are_unique_and_bijective(scenes):
    keys = [s.key for s in scenes]
    descriptions = [describe(s) for s in scenes]
    assert len(set(keys)) == len(keys)
    assert len(set(descriptions)) == len(descriptions)


def test_counts_follow_weights_and_skip_exhausted_counts(scenes):
    counts = Counter(s.count for s in sample_scenes(1500, VOCAB, seed=1))
    assert all(400 < counts[c] < 600 for c in (1, 2, 3))
    # 3000 scenes: 1000 single-object ones are asked for but only 630 exist
    counts = Counter(s.count for s in scenes)
    assert counts[1] == 630 and abs(counts[2] - counts[3]) < 150
    # single-object scenes run out at 630: the rest goes to the other counts
    many = sample_scenes(3000, VOCAB, count_weights=(10, 1, 1), seed=0)
    counts = Counter(s.count for s in many)
    assert counts[1] == 630 and counts[2] + counts[3] == 2370
    only_two = allocate_counts(100, VOCAB, (0, 1, 0), np.random.default_rng(0))
    assert set(only_two.tolist()) == {2}


def test_every_unique_scene_can_be_drawn_and_impossible_sizes_fail():
    vocab = ShapesVocab(shapes=("circle",), colours=("red", "green"), sizes=("small",))
    total = sum(scene_space_sizes(vocab).values())  # 2 objects: 18 + 4 + 0
    assert total == 22
    scenes = sample_scenes(total, vocab, seed=0, split="val")
    assert len({s.key for s in scenes}) == total
    with pytest.raises(ValueError, match=r"'val'.*data\.val_size=23.*only 22"):
        sample_scenes(total + 1, vocab, seed=0, split="val")
    with pytest.raises(ValueError, match=r"data\.count_weights"):
        sample_scenes(5, vocab, count_weights=(1, 1), seed=0)


def test_vocab_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"data\.shapes.*hexagon.*allowed"):
        ShapesVocab(shapes=("circle", "hexagon"))
    with pytest.raises(ValueError, match=r"data\.colours"):
        ShapesVocab(colours=())
    with pytest.raises(ValueError, match=r"data\.sizes"):
        ShapesVocab(sizes=("medium",))


def test_geometry_inside_image_and_no_overlap(scenes):
    for scene in scenes:
        boxes = [(o.x - o.radius, o.y - o.radius, o.x + o.radius, o.y + o.radius) for o in scene.objects]
        for x0, y0, x1, y1 in boxes:
            assert x0 > 0 and y0 > 0 and x1 < 1 and y1 < 1
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
        # canonical order is spatial order
        axis = "x" if scene.layout in ("horizontal", "row") else "y"
        if scene.count > 1:
            coords = [getattr(o, axis) for o in scene.objects]
            assert coords == sorted(coords)


def test_make_scene_rejects_identical_objects_and_bad_layouts():
    with pytest.raises(ValueError, match="identical"):
        make_scene([("circle", "red", "small"), ("circle", "red", "small")])
    with pytest.raises(ValueError, match="layout"):
        make_scene([("circle", "red", "small")], layout="row")


def test_describe_hand_made_scenes():
    assert describe(make_scene([("circle", "red", "small")], region="top left")) == "a small red circle in the top left"
    two = make_scene([("circle", "red", "small"), ("square", "blue", "large")], layout="vertical")
    assert describe(two) == "a small red circle above a large blue square"
    three = make_scene([("circle", "red", "small"), ("square", "blue", "large"), ("cross", "green", "small")])
    assert describe(three) == "a small red circle, a large blue square and a small green cross from left to right"


def test_labels_use_the_largest_first_object():
    scene = make_scene([("circle", "red", "small"), ("square", "blue", "large"), ("cross", "green", "large")])
    assert primary_object(scene).attributes == ("square", "blue", "large")
    assert LABEL_NAMES == ("shape", "colour", "count")
    assert scene_labels(scene, VOCAB) == (VOCAB.shapes.index("square"), VOCAB.colours.index("blue"), 2)
    small = make_scene([("diamond", "cyan", "small"), ("circle", "red", "small")], layout="vertical")
    assert scene_labels(small, VOCAB) == (VOCAB.shapes.index("diamond"), VOCAB.colours.index("cyan"), 1)


def test_hard_negatives_change_exactly_one_thing(scenes):
    rng = random.Random(0)
    seen = Counter()
    for scene in scenes[:1500]:
        kind, neg = hard_negative(scene, VOCAB, rng)
        seen[kind] += 1
        assert neg.key != scene.key and describe(neg) != describe(scene)
        assert len({o.attributes for o in neg.objects}) == neg.count  # still a valid scene
        before, after = [o.attributes for o in scene.objects], [o.attributes for o in neg.objects]
        if kind == "relation":
            assert sorted(before) == sorted(after)
            assert before != after or neg.region != scene.region
        else:
            slot = NEG_KIND_NAMES.index(kind)
            diffs = [(a, b) for a, b in zip(before, after) if a != b]
            assert len(diffs) == 1
            a, b = diffs[0]
            assert [k for k in range(3) if a[k] != b[k]] == [slot]
    assert set(seen) == set(NEG_KIND_NAMES)
    assert min(seen.values()) > 200


def test_negative_kinds_respect_collisions():
    # two objects differing only in size: flipping either size would duplicate the other
    scene = make_scene([("circle", "red", "small"), ("circle", "red", "large")])
    assert "size" not in feasible_negative_kinds(scene, VOCAB)
    with pytest.raises(ValueError):
        hard_negative(scene, VOCAB, random.Random(0), kind="size")
    one_size = ShapesVocab(sizes=("small",))
    assert "size" not in feasible_negative_kinds(make_scene([("circle", "red", "small")]), one_size)


def qa_dict(scene):
    qa = candidate_questions(scene, VOCAB)
    table = {q.question: q.answer for q in qa}
    assert len(table) == len(qa)  # no question with two answers
    return table


def test_questions_on_a_hand_made_pair():
    qa = qa_dict(make_scene([("circle", "red", "small"), ("square", "blue", "large")], layout="horizontal"))
    expected = {
        "how many objects are there?": "two",
        "what colour is the circle?": "red",
        "what shape is the blue object?": "square",
        "what size is the red circle?": "small",
        "is the blue square small or large?": "large",
        "is there a blue square?": "yes",
        "is there a red square?": "no",
        "is the circle to the left of the square?": "yes",
        "is the square to the left of the circle?": "no",
        "is the square to the right of the circle?": "yes",
        "how many red objects are there?": "one",
        "how many green objects are there?": "zero",
        "how many triangles are there?": "zero",
    }
    for question, answer in expected.items():
        assert qa[question] == answer, question
    assert "is the circle above the square?" not in qa  # only the layout's axis is asked about


def test_questions_skip_ambiguous_references():
    scene = make_scene(
        [("circle", "red", "small"), ("circle", "blue", "small"), ("circle", "red", "large")], layout="column"
    )
    qa = qa_dict(scene)
    assert "what colour is the circle?" not in qa
    assert "what colour is the small circle?" not in qa  # two small circles
    assert qa["what colour is the large circle?"] == "red"
    assert "what shape is the red object?" not in qa
    assert qa["what shape is the blue object?"] == "circle"
    assert "what size is the red circle?" not in qa
    assert qa["what size is the blue circle?"] == "small"
    assert qa["how many circles are there?"] == "three"
    assert qa["is the blue circle above the large red circle?"] == "yes"
    assert qa["is the small red circle below the blue circle?"] == "no"
    assert qa["how many objects are there?"] == "three"
    single = qa_dict(make_scene([("star", "white", "large")], region="bottom right"))
    assert single["is the star in the bottom right?"] == "yes"
    assert single["is the star in the center?"] == "no"


def test_sampled_questions_are_valid_distinct_and_balanced(scenes):
    rng = random.Random(0)
    answers = Counter()
    vocab = set(VOCAB.answer_vocab)
    for scene in scenes[:400]:
        table = qa_dict(scene)
        qa = sample_questions(scene, VOCAB, 3, rng)
        assert len(qa) == 3 and len({q.question for q in qa}) == 3
        for q in qa:
            assert table[q.question] == q.answer
            assert q.answer in vocab
            answers[q.answer] += 1
    assert 0.5 < answers["yes"] / answers["no"] < 2.0
