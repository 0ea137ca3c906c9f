"""ShapesDataset: determinism, uniqueness, captions true of their scene, negatives false, QA."""

import random

import pytest
import torch

from mmresearch.data.shapes.captions import generate_captions, parse_caption
from mmresearch.data.shapes.dataset import CaptionPairDataset, ShapesDataset
from mmresearch.data.shapes.scene import LABEL_NAMES, NEG_KIND_NAMES, candidate_questions, describe, make_scene
from mmresearch.data.shapes.vocabulary import COLOUR_SYNONYMS, SHAPE_SYNONYMS, SIZE_SYNONYMS, ShapesVocab


@pytest.fixture(scope="module")
def ds():
    return ShapesDataset(400, split="train", seed=5)


def test_same_seed_same_data_other_seed_or_split_differs(ds):
    again = ShapesDataset(400, split="train", seed=5)
    assert torch.equal(ds.images, again.images)
    assert ds.captions == again.captions
    assert ds.questions == again.questions and torch.equal(ds.answers, again.answers)
    assert ds.neg_captions == again.neg_captions and torch.equal(ds.neg_kinds, again.neg_kinds)
    other_seed = ShapesDataset(400, split="train", seed=6)
    other_split = ShapesDataset(400, split="val", seed=5)
    for other in (other_seed, other_split):
        assert not torch.equal(ds.images, other.images)
        assert ds.descriptions != other.descriptions


def test_more_captions_do_not_change_the_images():
    a = ShapesDataset(50, seed=1, captions_per_image=2)
    b = ShapesDataset(50, seed=1, captions_per_image=7)
    assert torch.equal(a.images, b.images) and a.descriptions == b.descriptions
    assert all(len(c) == 7 for c in b.captions)


def test_storage_and_item(ds):
    n = len(ds)
    assert ds.images.shape == (n, 3, 64, 64) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (n, len(LABEL_NAMES)) and ds.labels.dtype == torch.long
    assert ds.answers.shape == (n, 3) and int(ds.answers.max()) < len(ds.answer_vocab)
    assert ds.neg_kinds.shape == (n,) and int(ds.neg_kinds.max()) < len(NEG_KIND_NAMES)
    assert len(ds.captions) == len(ds.neg_captions) == len(ds.questions) == len(ds.descriptions) == n
    item = ds[3]
    assert set(item) >= {"image", "image_id", "captions", "labels", "neg_caption", "neg_kind", "questions", "answers"}
    assert item["image_id"] == 3 and torch.equal(item["image"], ds.images[3])
    pairs = CaptionPairDataset(ds)
    assert len(pairs) == n * 5
    pair = pairs[3 * 5 + 2]
    assert pair["image_id"] == 3 and pair["caption"] == ds.captions[3][2] and pair["text_id"] == 17
    assert ShapesDataset(0).images.shape[0] == 0


def test_descriptions_unique_and_canonical(ds):
    assert len(set(ds.descriptions)) == len(ds)
    assert ds.descriptions == [describe(s) for s in ds.scenes]


def _mentions(caption, synonyms):
    words = f" {caption.replace(',', ' ')} "
    return any(f" {s} " in words for s in synonyms)


def test_captions_describe_every_object_and_are_distinct(ds):
    layouts = set()
    for scene, captions in zip(ds.scenes, ds.captions):
        assert len(captions) == 5 and len(set(captions)) == 5
        for caption in captions:
            for obj in scene.objects:
                assert _mentions(caption, SHAPE_SYNONYMS[obj.shape]), (caption, obj)
                assert _mentions(caption, COLOUR_SYNONYMS[obj.colour]), (caption, obj)
                assert _mentions(caption, SIZE_SYNONYMS[obj.size]), (caption, obj)
            # stronger: the caption states exactly this scene (objects, order, region)
            assert parse_caption(caption) == [scene.key], caption
        layouts.add(scene.layout)
    assert layouts == {"region", "horizontal", "vertical", "row", "column"}


def test_relations_are_phrased_both_ways():
    scene = make_scene([("circle", "red", "small"), ("square", "blue", "large")], layout="horizontal")
    captions = set(generate_captions(scene, 60, random.Random(0)))
    assert any("left of" in c for c in captions) and any("right of" in c for c in captions)
    assert all(parse_caption(c) == [scene.key] for c in captions)


def test_hard_negatives_are_false_for_the_scene(ds):
    for scene, desc, neg, neg_desc, kind in zip(
        ds.scenes, ds.descriptions, ds.neg_captions, ds.neg_descriptions, ds.neg_kinds.tolist()
    ):
        assert neg_desc != desc
        keys = parse_caption(neg)
        assert len(keys) == 1 and keys[0] != scene.key, (neg, desc)
        assert parse_caption(neg_desc) == keys
        assert 0 <= kind < len(NEG_KIND_NAMES)
    kinds = set(ds.neg_kinds.tolist())
    assert kinds == set(range(len(NEG_KIND_NAMES)))


def test_questions_have_the_right_answers(ds):
    for scene, questions, answers in zip(ds.scenes[:200], ds.questions, ds.answers.tolist()):
        table = {q.question: q.answer for q in candidate_questions(scene, ds.vocab)}
        for question, answer in zip(questions, answers):
            assert table[question] == ds.answer_vocab[answer]


def test_labels_match_the_scene(ds):
    for scene, (shape, colour, count) in zip(ds.scenes, ds.labels.tolist()):
        assert count == scene.count - 1
        large = [o for o in scene.objects if o.size == "large"] or list(scene.objects)
        assert (ds.class_names["shape"][shape], ds.class_names["colour"][colour]) == (large[0].shape, large[0].colour)


def test_impossible_split_size_names_the_split():
    vocab = ShapesVocab(shapes=("circle", "square"), colours=("red",), sizes=("small",))
    with pytest.raises(ValueError, match=r"split 'test'.*data\.test_size=100"):
        ShapesDataset(100, split="test", vocab=vocab)
    with pytest.raises(ValueError, match=r"data\.captions_per_image"):
        ShapesDataset(10, captions_per_image=0)


def test_several_negatives_per_image_rotate_with_the_caption():
    ds = ShapesDataset(300, split="train", seed=3, image_size=32, questions_per_image=0, unique_scenes=False, negatives_per_image=5)
    assert ds.negative_kinds.shape == (300, 5) and ds.negative_image_ids.shape == (300, 5)
    assert ds.neg_captions == [n[0] for n in ds.negatives]
    pairs = CaptionPairDataset(ds)
    for image in range(0, 300, 37):
        scene_key = ds.scenes[image].key
        seen = set()
        for caption in range(5):
            item = pairs[image * 5 + caption]
            assert item["neg_caption"] == ds.negatives[image][caption]
            assert item["neg_kind"] == int(ds.negative_kinds[image, caption])
            assert parse_caption(item["neg_caption"]) != [scene_key]  # false of its own scene
            neg_id = item["neg_image_id"]
            if neg_id >= 0:  # another image of the split shows exactly the negative's scene
                assert ds.descriptions[neg_id] == ds.negative_descriptions[image][caption]
            seen.add(item["neg_caption"])
        assert len(seen) >= 3  # the negatives vary
    # one negative per image keeps the earlier behaviour
    single = ShapesDataset(50, split="train", seed=3, image_size=32, questions_per_image=0, unique_scenes=False)
    assert single.negative_kinds.shape == (50, 1)
    with pytest.raises(ValueError, match="data.negatives_per_image"):
        ShapesDataset(5, negatives_per_image=0)
