"""``ImageTextDataModule`` on small written fixtures (and the real flickr8k-mini when present):
the batch contract, deterministic splits, timm transforms, and bad samples skipped, counted and
bounded in training but fatal in evaluation."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from real_fixtures import FLICKR_MINI, captions_for, tiny_tokenizer, write_corrupt, write_csv, write_images, write_karpathy

from mmresearch.data.batch import ImageTextBatch
from mmresearch.data.image_text import ImageTextDataModule, split_by_image
from mmresearch.data.sampler import CaptionPairSampler
from mmresearch.data.skips import DataError, DataQualityError
from mmresearch.data.transforms import resolve_image_config
from mmresearch.utils.errors import ConfigError

TOKENIZER = tiny_tokenizer()


def _flickr_like(tmp_path, n=12, per_image=3, extra_rows=b""):
    names = write_images(tmp_path / "images", n)
    path = write_csv(tmp_path / "captions.csv", captions_for(names, per_image))
    if extra_rows:
        path.write_bytes(path.read_bytes() + extra_rows)
    return path


def _module(path, **kwargs):
    options = dict(split={"val": 2, "test": 2, "seed": 0}, image_size=32, transform={"model": "resnet10t"}, batch_size=4,
                   eval_batch_size=3, num_workers=0)
    options.update(kwargs)
    return ImageTextDataModule(TOKENIZER, train={"format": "csv", "path": str(path), "image_root": str(path.parent / "images")}, **options)


def test_batch_contract(tmp_path):
    dm = _module(_flickr_like(tmp_path))
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (8, 2, 2)
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, ImageTextBatch) and batch.is_paired
    assert batch.images.shape == (4, 3, 32, 32) and batch.images.dtype == torch.float32
    assert batch.labels is None and batch.neg_input_ids is None and batch.skipped == {}
    evaluation = [b for b in dm.val_dataloader()]
    assert sum(b.num_images for b in evaluation) == 2 and sum(b.num_texts for b in evaluation) == 6
    b = evaluation[0]
    assert torch.equal(b.text_image_ids, b.image_ids.repeat_interleave(3))
    text_ids = torch.cat([b.text_ids for b in dm.test_dataloader()])
    assert text_ids.tolist() == list(range(6))  # caption ids are unique over the split
    # evaluation images are deterministic (no augmentation): two passes are equal
    assert torch.equal(next(iter(dm.val_dataloader())).images, b.images)


def test_split_is_deterministic_disjoint_and_order_free(tmp_path):
    dm = _module(_flickr_like(tmp_path, n=20))
    items = dm.train_dataset, dm.val_dataset, dm.test_dataset
    paths = [set(ds.paths) for ds in items]
    assert sum(len(p) for p in paths) == 20 and len(set.union(*paths)) == 20
    from mmresearch.data.formats import read_table

    ann = read_table(tmp_path / "captions.csv")
    a = split_by_image(ann.items, {"val": 3, "test": 4}, seed=1)
    b = split_by_image(list(reversed(ann.items)), {"val": 3, "test": 4}, seed=1)
    assert [i.image for i in a["test"]] == [i.image for i in b["test"]] and [i.image for i in a["val"]] == [i.image for i in b["val"]]
    assert [i.image for i in split_by_image(ann.items, {"val": 3, "test": 4}, seed=2)["test"]] != [i.image for i in a["test"]]
    with pytest.raises(ConfigError, match="data.split"):
        split_by_image(ann.items, {"val": 10, "test": 10}, seed=0)


def test_variable_captions_sampler():
    counts = [1, 5, 2, 7]
    random = CaptionPairSampler(4, counts, "random", seed=0)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for epoch in range(5):
        random.set_epoch(epoch)
        pairs = list(random)
        images = [int(np.searchsorted(offsets, p, side="right") - 1) for p in pairs]
        assert sorted(images) == [0, 1, 2, 3]  # each image once, with one of its own captions
    every = CaptionPairSampler(4, counts, "all", seed=0)
    assert sorted(every) == list(range(15)) and len(every) == 15


def test_transforms_follow_timm_data_config():
    lite = resolve_image_config("tf_efficientnet_lite0")
    assert (lite.image_size, lite.mean, lite.interpolation) == (224, (0.5, 0.5, 0.5), "bicubic")
    imagenet = resolve_image_config("tf_efficientnet_lite0", image_size=96, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    assert imagenet.image_size == 96 and imagenet.mean == (0.485, 0.456, 0.406)
    assert resolve_image_config("resnet10t").image_size == 176  # timm's resnet10t default
    with pytest.raises(ConfigError, match="data.transform.model"):
        resolve_image_config("not_a_model")


def test_transform_options_and_lowercase(tmp_path):
    path = _flickr_like(tmp_path)
    with pytest.raises(ConfigError, match="train_augment"):
        _module(path, transform={"model": "resnet10t", "train_augment": {"bogus": 1}})
    with pytest.raises(ConfigError, match="unknown keys"):
        _module(path, transform={"modle": "resnet10t"})
    upper = _module(path, lowercase=False)
    lower = _module(path, lowercase=True)
    sample = upper.test_dataset.captions[0][0].upper()
    ids_upper = upper.train_dataloader().collate_fn.tokenize([sample])[0]
    lower_collate = lower.train_dataloader().collate_fn
    item = {"image": torch.zeros(3, 32, 32), "image_id": 0, "caption": sample, "text_id": 0}
    assert lower_collate([item]).input_ids.tolist() == lower_collate.tokenize([sample.lower()])[0].tolist()
    assert ids_upper.shape[0] == 1


def test_bad_training_samples_skipped_and_counted(tmp_path):
    extra = b"missing.jpg,a caption of a missing file\nmissing.jpg,another one\nimg000.jpg,\n"
    path = _flickr_like(tmp_path, n=12, extra_rows=extra)
    write_corrupt(tmp_path / "images", "img005.jpg", truncated_from=tmp_path / "images" / "img004.jpg")
    dm = _module(path, split=None, val={"format": "csv", "path": str(path)}, test={"format": "csv", "path": str(path)},
                 max_skipped_fraction=0.5, check_files=True, caption_sampling="all")
    with pytest.raises(DataError):  # the evaluation sources hold the same bad rows: never dropped there
        dm.setup()
    good = write_csv(tmp_path / "eval.csv", captions_for(["img001.jpg", "img002.jpg"], 2))
    dm = _module(path, split=None, val={"format": "csv", "path": str(good), "image_root": str(tmp_path / "images")},
                 test={"format": "csv", "path": str(good), "image_root": str(tmp_path / "images")},
                 max_skipped_fraction=0.5, caption_sampling="all")
    dm.setup()
    assert dict(dm.skip_ledger.setup_skipped) == {"missing_image": 2, "empty_caption": 1}
    assert dm.skip_ledger.setup_total == 36 + 3
    seen, skipped = [], {}
    for batch in dm.train_dataloader():
        seen += batch.text_ids.tolist()
        for reason, names in batch.skipped.items():
            skipped.setdefault(reason, []).extend(names)
    assert list(skipped) == ["corrupt_image"] and len(skipped["corrupt_image"]) == 3  # its 3 pairs, each named
    assert all("img005.jpg" in name for name in skipped["corrupt_image"])
    assert len(seen) + 3 == 36 and len(set(seen)) == len(seen)  # nothing substituted, nothing repeated


def test_skip_threshold_at_setup(tmp_path):
    extra = b"missing.jpg,a caption of a missing file\n"
    path = _flickr_like(tmp_path, n=12, extra_rows=extra)
    with pytest.raises(DataQualityError, match=r"missing_image=1.*max_skipped_fraction=0.01.*missing\.jpg"):
        _module(path).setup()
    _module(path, max_skipped_fraction=0.05).setup()  # 1 of 37 samples: under 5%


def test_evaluation_never_drops(tmp_path):
    path = _flickr_like(tmp_path)
    images = tmp_path / "images"
    ev = write_karpathy(tmp_path / "test.json", {"img001.jpg": ["a"], "gone.jpg": ["b"]}, per_caption=False)
    dm = _module(path, split={"val": 2}, test={"format": "karpathy", "path": str(ev), "image_root": str(images)})
    with pytest.raises(DataError, match=r"evaluation split 'test'.*gone\.jpg"):
        dm.setup()
    shutil.copy(images / "img001.jpg", images / "gone.jpg")
    write_corrupt(images, "gone.jpg")
    # a corrupt evaluation image: found at set-up on every rank alike (not later, on one rank only)
    dm = _module(path, split={"val": 2}, test={"format": "karpathy", "path": str(ev), "image_root": str(images)})
    with pytest.raises(DataError, match=r"evaluation split 'test'.*gone\.jpg \(corrupt_image\)"):
        dm.setup()
    # without the set-up check, loading it is still an error naming the file
    dm = _module(path, split={"val": 2}, test={"format": "karpathy", "path": str(ev), "image_root": str(images)}, check_files=False)
    dm.setup()
    with pytest.raises(DataError, match=r"cannot read image .*gone\.jpg of evaluation split 'test'.*corrupt_image"):
        list(dm.test_dataloader())


def test_drawn_evaluation_images_must_be_whole(tmp_path):
    """A row lost from an image that the split then puts into val/test is an error, not a thinned
    evaluation set; the same row lost from a training image is only counted."""
    from mmresearch.data.formats import read_table

    path = _flickr_like(tmp_path, n=12)
    test_image = split_by_image(read_table(path).items, {"val": 2, "test": 2}, seed=0)["test"][0].image
    train_image = split_by_image(read_table(path).items, {"val": 2, "test": 2}, seed=0)["train"][0].image
    broken = tmp_path / "broken.csv"
    broken.write_bytes(path.read_bytes() + f"{test_image},   \n".encode())
    with pytest.raises(DataError, match=rf"images \['{test_image}'\] drawn into evaluation split 'test' lost rows"):
        _module(broken, max_skipped_fraction=0.5).setup()
    broken.write_bytes(path.read_bytes() + f"{train_image},   \n".encode())
    dm = _module(broken, max_skipped_fraction=0.5)
    dm.setup()
    assert dict(dm.skip_ledger.setup_skipped) == {"empty_caption": 1}


def test_evaluation_only_setup_does_not_need_training_images(tmp_path):
    path = _flickr_like(tmp_path)
    clean = write_csv(tmp_path / "eval.csv", captions_for(["img001.jpg", "img002.jpg"], 2))
    train = write_csv(tmp_path / "train.csv", {"nowhere.jpg": ["x"]})  # would fail the skip limit
    ev = {"format": "csv", "path": str(clean), "image_root": str(tmp_path / "images")}
    dm = ImageTextDataModule(TOKENIZER, train={"format": "csv", "path": str(train)}, val=ev, test=ev, image_size=32, batch_size=2)
    dm.setup("test")
    assert len(dm.test_dataset) == 2 and "train" not in dm._splits
    with pytest.raises(DataQualityError):
        dm.setup("fit")
    assert path.exists()


def test_source_config_errors(tmp_path):
    path = _flickr_like(tmp_path)
    with pytest.raises(ConfigError, match=r"data.train.format='tsv' is not known"):
        ImageTextDataModule(TOKENIZER, train={"format": "tsv", "path": str(path)}, split={"val": 1, "test": 1})
    with pytest.raises(ConfigError, match=r"data.train: keys \['urls'\] are not options of format 'csv'"):
        ImageTextDataModule(TOKENIZER, train={"format": "csv", "path": str(path), "urls": "x"}, split={"val": 1, "test": 1})
    with pytest.raises(ConfigError, match="data.val: give a source"):
        ImageTextDataModule(TOKENIZER, train={"format": "csv", "path": str(path)}, split={"test": 1})
    with pytest.raises(ConfigError, match="data.test.format"):
        ImageTextDataModule(TOKENIZER, train={"format": "csv", "path": str(path)}, split={"val": 1},
                            test={"format": "webdataset", "urls": "a.tar", "num_samples": 1})


def test_root_makes_paths_relative(tmp_path):
    _flickr_like(tmp_path)
    dm = ImageTextDataModule(TOKENIZER, root=str(tmp_path), train={"format": "csv", "path": "captions.csv", "image_root": "images"},
                             split={"val": 2, "test": 2}, image_size=32, batch_size=4)
    dm.setup()
    assert dm.train_dataset.paths[0].startswith(str(tmp_path / "images"))


def _balance_worker(rank: int, port: int, sizes, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from types import SimpleNamespace

        dm = ImageTextDataModule.__new__(ImageTextDataModule)
        from mmresearch.data.skips import SkipLedger

        dm.skip_ledger = SkipLedger()
        dm.trainer = SimpleNamespace(training=True)
        n = sizes[rank]
        batch = ImageTextBatch(images=torch.zeros(n, 3, 2, 2), image_ids=torch.arange(n), input_ids=torch.zeros(n, 4, dtype=torch.long),
                               attention_mask=torch.ones(n, 4, dtype=torch.long), text_image_ids=torch.arange(n), text_ids=torch.arange(n),
                               skipped={"corrupt_image": ["x.jpg"]} if n < max(sizes) else {})
        out = ImageTextDataModule.on_after_batch_transfer(dm, batch, 0)
        results[rank] = (out.num_images, out.input_ids.shape[0], dict(dm.skip_ledger.epoch_skipped), dm.skip_ledger.epoch_used)
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_cut_to_the_smallest_batch():
    """A rank that skipped samples has a smaller batch; every rank is cut to it (gathers need
    equal sizes) and the pairs cut are counted as ``ddp_balance``, not as bad data."""
    from helpers import free_port

    results = mp.Manager().dict()
    mp.start_processes(_balance_worker, args=(free_port(), (3, 4), results), nprocs=2, start_method="spawn")
    assert results[0] == (3, 3, {"corrupt_image": 1}, 3)
    assert results[1] == (3, 3, {"ddp_balance": 1}, 3)


@pytest.mark.skipif(not FLICKR_MINI.exists(), reason="../shared/data/flickr8k-mini is not present")
def test_real_flickr8k_mini(tmp_path):
    dm = ImageTextDataModule(TOKENIZER, train={"format": "csv", "path": str(FLICKR_MINI / "captions.csv"), "image_root": str(FLICKR_MINI / "images")},
                             split={"val": 100, "test": 200, "seed": 0}, image_size=64, transform={"model": "resnet10t"}, batch_size=32)
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (700, 100, 200)
    assert dm.skip_ledger.setup_total == 5000 and not dm.skip_ledger.setup_skipped
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (32, 3, 64, 64) and batch.skipped == {}
    test = next(iter(dm.test_dataloader()))
    assert test.num_texts == 5 * test.num_images


def test_loader_starts_at_the_fit_loops_epoch_with_workers(tmp_path):
    """Lightning starts the training iterator before it calls set_epoch, and workers draw their
    first indices at once: the loader must already be at the epoch being trained (a resumed run
    would otherwise replay epoch 0's order)."""
    from types import SimpleNamespace

    dm = _module(_flickr_like(tmp_path, n=20), num_workers=2)
    dm.setup()
    progress = SimpleNamespace(current=SimpleNamespace(processed=2))
    dm.trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_progress=progress), limit_train_batches=None)
    loader = dm.train_dataloader()
    first = next(iter(loader)).text_ids.tolist()
    expected = loader.sampler.indices(2)[: dm.batch_size].tolist()
    assert first == expected != loader.sampler.indices(0)[: dm.batch_size].tolist()


def test_skip_counts_survive_a_checkpoint(tmp_path):
    dm = _module(_flickr_like(tmp_path))
    dm.skip_ledger.history.append({"epoch": 0, "used": 10, "skipped": {"corrupt_image": 1}, "fraction": 0.09})
    dm.skip_ledger.add_batch({"corrupt_image": ["x.jpg"]}, 3)
    state = dm.state_dict()
    other = _module(_flickr_like(tmp_path / "b"))
    other.load_state_dict(state)
    assert other.skip_ledger.history == dm.skip_ledger.history
    assert dict(other.skip_ledger.epoch_skipped) == {"corrupt_image": 1} and other.skip_ledger.epoch_used == 3


def test_a_batch_with_no_usable_sample_stops_the_run(tmp_path):
    from types import SimpleNamespace

    from mmresearch.data.collate import TrainCollate
    from mmresearch.data.skips import Skipped

    dm = _module(_flickr_like(tmp_path))
    dm.trainer = SimpleNamespace(training=True)
    collate = TrainCollate(TOKENIZER, report_skips=True, normalize=False, with_negatives=False, with_questions=False)
    batch = collate([Skipped("corrupt_image", "a.jpg"), Skipped("missing_image", "b.jpg")])
    assert batch.num_images == 0 and set(batch.skipped) == {"corrupt_image", "missing_image"}
    with pytest.raises(DataError, match="no usable sample"):
        dm.on_after_batch_transfer(batch, 0)


def test_webdataset_urls_under_root():
    from mmresearch.data.image_text import _source

    spec = _source({"format": "webdataset", "urls": "a/{0..1}.tar::s3://bucket/x.tar::/abs/y.tar", "num_samples": 4}, "train", "/data")
    assert spec["urls"] == ["/data/a/{0..1}.tar", "s3://bucket/x.tar", "/abs/y.tar"]
