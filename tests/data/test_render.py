"""Rendering: exact object colours, no overlap, distinct backgrounds, determinism, speed."""

import time

import numpy as np
import pytest

from mmresearch.data.shapes.render import object_masks, render_scene, render_scenes
from mmresearch.data.shapes.scene import make_scene, sample_scenes
from mmresearch.data.shapes.vocabulary import ALL_COLOURS, ALL_SHAPES, COLOURS, ShapesVocab

ALL = ShapesVocab(shapes=ALL_SHAPES, colours=ALL_COLOURS)


@pytest.fixture(scope="module")
def scenes():
    return sample_scenes(300, ALL, seed=11)


@pytest.fixture(scope="module")
def images(scenes):
    return render_scenes(scenes, 64)


def test_shapes_and_dtype(images):
    assert images.shape == (300, 64, 64, 3) and images.dtype == np.uint8
    first = render_scenes([make_scene([("circle", "red", "small")])], 40, channels_last=False)
    assert first.shape == (1, 3, 40, 40)


def test_deterministic_and_independent_of_batching(scenes, images):
    assert np.array_equal(images, render_scenes(scenes, 64, chunk_size=7))
    assert np.array_equal(images[5], render_scene(scenes[5], 64))
    assert np.array_equal(images.transpose(0, 3, 1, 2), render_scenes(scenes, 64, channels_last=False))


@pytest.mark.parametrize("size", [48, 64, 96])  # at 32 px small crosses are ~1.5 px thin
def test_object_centre_has_exact_colour(scenes, size):
    images = render_scenes(scenes, size)
    for scene, image in zip(scenes, images):
        for obj in scene.objects:
            x, y = int(obj.x * size), int(obj.y * size)
            assert tuple(image[y, x]) == COLOURS[obj.colour], (scene, obj)


def test_objects_never_overlap_and_stay_inside(scenes):
    for scene in scenes:
        masks = object_masks(scene, 64) > 0
        assert masks.sum(axis=0).max() <= 1
        for mask in masks:
            assert mask.sum() > 10
            border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
            assert not border.any()


def test_background_is_far_from_every_object_colour(scenes, images):
    palette = np.array(list(COLOURS.values()), dtype=np.int32)
    for scene, image in zip(scenes, images):
        background = image[object_masks(scene, 64).sum(axis=0) == 0].astype(np.int32)  # [P, 3]
        assert background.max() < 170
        distance = np.abs(background[:, None, :] - palette[None, :, :]).max(axis=2)  # L-inf
        assert distance.min() > 60


def test_large_is_clearly_larger_than_small():
    for shape in ALL_SHAPES:
        small = make_scene([(shape, "red", "small")])
        large = make_scene([(shape, "red", "large")])
        ratio = np.sqrt(object_masks(large, 64).sum() / object_masks(small, 64).sum())
        assert 1.6 < ratio < 2.1, (shape, ratio)


def test_every_shape_looks_different():
    masks = {s: object_masks(make_scene([(s, "red", "large")]), 64)[0] > 0.5 for s in ALL_SHAPES}
    for a in ALL_SHAPES:
        for b in ALL_SHAPES:
            if a < b:
                assert (masks[a] != masks[b]).sum() > 20, (a, b)


def test_render_speed():
    scenes = sample_scenes(5000, ShapesVocab(), seed=0)
    start = time.perf_counter()
    render_scenes(scenes, 64)
    elapsed = time.perf_counter() - start
    # budget: 50k images in ~10 s on one core; 5k here with 2.5x slack for a shared machine
    assert elapsed < 2.5, elapsed
