"""Skipped-sample examples: each file listed once with how many samples it cost (a corrupt image
with 5 captions is one entry with count 5), in the ledger, results.json, the error message and
checkpoints; at most ``EXAMPLES_PER_REASON`` distinct names per reason."""

from __future__ import annotations

import pytest

from mmresearch.data.formats import Annotations
from mmresearch.data.skips import EXAMPLES_PER_REASON, DataQualityError, SkipLedger, Skipped, check_fraction, summarize

CORRUPT = "img003.jpg (cannot identify image file)"


def _batch_of_pairs(names):
    """What a training batch carries in ``batch.skipped``: one name per skipped (image, caption) pair."""
    return summarize(Skipped("corrupt_image", n.split(" (")[0], "cannot identify image file") for n in names)


def test_a_corrupt_image_with_five_captions_is_one_example_with_count_five():
    ledger = SkipLedger()
    ledger.add_batch(_batch_of_pairs([CORRUPT] * 3), used=5)
    ledger.add_batch(_batch_of_pairs([CORRUPT] * 2), used=5)  # its other captions, in a later batch
    assert ledger.epoch_skipped["corrupt_image"] == 5
    assert ledger.examples == {"corrupt_image": {CORRUPT: 5}}
    assert ledger.summary()["examples"] == {"corrupt_image": {CORRUPT: 5}}


def test_distinct_names_are_bounded_and_kept_names_keep_counting():
    ledger = SkipLedger()
    names = [f"img{i:03d}.jpg" for i in range(EXAMPLES_PER_REASON + 3)]
    ledger.add_batch({"corrupt_image": names}, used=0)
    ledger.add_batch({"corrupt_image": [names[0], names[-1]]}, used=0)  # a kept name and one past the limit
    kept = ledger.examples["corrupt_image"]
    assert list(kept) == names[:EXAMPLES_PER_REASON]
    assert kept[names[0]] == 2 and sum(kept.values()) == EXAMPLES_PER_REASON + 1
    assert ledger.epoch_skipped["corrupt_image"] == len(names) + 2  # the counts themselves are never capped


def test_setup_examples_carry_the_captions_of_a_missing_image():
    ann = Annotations("captions.csv")
    ann.skip("missing_image", "/data/gone.jpg", count=5)
    ann.skip("empty_caption", "captions.csv:7 (img001.jpg)")
    assert ann.examples == {"missing_image": {"/data/gone.jpg": 5}, "empty_caption": {"captions.csv:7 (img001.jpg)": 1}}
    ledger = SkipLedger()
    ledger.add_setup(ann.skipped, 40, ann.examples)
    assert ledger.examples["missing_image"] == {"/data/gone.jpg": 5}


def test_the_error_names_each_file_once_with_its_count():
    examples = {"corrupt_image": {CORRUPT: 5, "img009.jpg (truncated)": 1}}
    with pytest.raises(DataQualityError) as err:
        check_fraction("training epoch 0", {"corrupt_image": 6}, 60, 0.01, examples)
    message = str(err.value)
    assert message.count("img003.jpg") == 1 and f"{CORRUPT} x5" in message
    assert "img009.jpg (truncated)" in message and "img009.jpg (truncated) x" not in message  # a single sample: no count


def test_example_counts_survive_a_checkpoint_and_old_list_states_load(tmp_path):
    from mmresearch.data.image_text import ImageTextDataModule
    from real_fixtures import captions_for, tiny_tokenizer, write_csv, write_images

    def module(root):
        names = write_images(root / "images", 8)
        path = write_csv(root / "captions.csv", captions_for(names, 2))
        return ImageTextDataModule(tiny_tokenizer(), train={"format": "csv", "path": str(path), "image_root": str(root / "images")},
                                   split={"val": 2, "test": 2, "seed": 0}, image_size=32, transform={"model": "resnet10t"}, batch_size=4)

    dm = module(tmp_path / "a")
    dm.skip_ledger.add_batch(_batch_of_pairs([CORRUPT] * 5), used=3)
    other = module(tmp_path / "b")
    other.load_state_dict(dm.state_dict())
    assert other.skip_ledger.examples == {"corrupt_image": {CORRUPT: 5}}
    old = module(tmp_path / "c")  # a checkpoint written before counts: a list with one name per sample
    old.load_state_dict({**dm.state_dict(), "examples": {"corrupt_image": [CORRUPT] * 5}})
    assert old.skip_ledger.examples == {"corrupt_image": {CORRUPT: 5}}
