"""ShapesDataModule: batch contract, caching, per-epoch caption sampling, config errors, Hydra."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mmresearch.data.batch import ImageTextBatch  # noqa: E402
from mmresearch.data.collate import TextEncoder  # noqa: E402
from mmresearch.data.datamodule import CaptionPairSampler, ShapesDataModule  # noqa: E402
from mmresearch.data.tokenizer import build_shapes_tokenizer  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "conf" / "data" / "shapes.yaml"
SMALL = dict(train_size=320, val_size=70, test_size=50, batch_size=64, eval_batch_size=32)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_shapes_tokenizer(save_dir=tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def dm(tokenizer):
    module = ShapesDataModule(tokenizer=tokenizer, **SMALL)
    module.setup("fit")
    return module


def decode(tokenizer, ids):
    """Decoded text without spaces (decoding puts spaces around some punctuation)."""
    return tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "")


def squash(text):
    return text.replace(" ", "")


def test_train_batch(dm, tokenizer):
    loader = dm.train_dataloader()
    assert len(loader) == 320 // 64  # drop_last
    batch = next(iter(loader))
    assert isinstance(batch, ImageTextBatch) and batch.is_paired
    assert batch.images.shape == (64, 3, 64, 64) and batch.images.dtype == torch.float32
    assert -1.0 <= float(batch.images.min()) and float(batch.images.max()) <= 1.0
    assert batch.input_ids.shape == batch.attention_mask.shape == (64, 32)
    assert batch.input_ids.dtype == batch.attention_mask.dtype == torch.long
    assert torch.equal(batch.text_image_ids, batch.image_ids)
    assert batch.labels.shape == (64, 3)
    assert batch.neg_input_ids is None and batch.question_input_ids is None
    ds = dm.train_dataset
    for i in range(8):
        image_id, text_id = int(batch.image_ids[i]), int(batch.text_ids[i])
        index = text_id // 5
        assert image_id == int(ds.scene_ids[index])  # renders of one scene share the id
        assert ds.descriptions[image_id] == ds.descriptions[index]
        assert decode(tokenizer, batch.input_ids[i]) == squash(ds.captions[index][text_id % 5])
        expected = (ds.images[index].float() / 255 - 0.5) / 0.5
        assert torch.allclose(batch.images[i], expected, atol=1e-5)


def test_eval_batch(dm, tokenizer):
    loader = dm.val_dataloader()
    batches = list(loader)
    assert [b.num_images for b in batches] == [32, 32, 6]
    batch = batches[1]
    b, c = 32, 5
    assert batch.input_ids.shape == (b * c, 32) and batch.num_texts == b * c
    assert torch.equal(batch.image_ids, torch.arange(32, 64))
    assert torch.equal(batch.text_image_ids, batch.image_ids.repeat_interleave(c))
    assert torch.equal(batch.text_ids, torch.arange(32 * c, 64 * c))
    assert not batch.is_paired
    assert batch.labels.shape == (b, 3) and batch.neg_kinds.shape == (b,)
    assert batch.neg_input_ids.shape == batch.neg_attention_mask.shape == (b, 32)
    assert batch.question_input_ids.shape == batch.question_attention_mask.shape == (b, 3, 32)
    assert batch.answers.shape == (b, 3) and int(batch.answers.max()) < dm.num_answers
    ds = dm.val_dataset
    assert decode(tokenizer, batch.input_ids[7]) == squash(ds.captions[33][2])
    assert decode(tokenizer, batch.neg_input_ids[1]) == squash(ds.neg_captions[33])
    assert decode(tokenizer, batch.question_input_ids[1, 2]) == squash(ds.questions[33][2])


@pytest.mark.parametrize("padding", ["max_length", "longest"])
def test_text_encoder_matches_the_tokenizer(dm, tokenizer, padding):
    texts = dm.val_dataset.captions[0] + dm.val_dataset.questions[1] + ["an unknown zebra"] + ["red " * 40]
    encoder = TextEncoder(tokenizer, max_length=32, padding=padding)
    for _ in range(2):  # second round from the cache
        ids, mask = encoder(texts)
        ref = tokenizer(texts, padding=padding, truncation=True, max_length=32, return_tensors="pt")
        assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])
        assert ids.dtype == mask.dtype == torch.long


def test_properties(dm):
    assert dm.label_names == ("shape", "colour", "count")
    assert dm.neg_kind_names == ("shape", "colour", "size", "relation")
    assert dm.class_names["count"] == ["one", "two", "three"] and len(dm.class_names["colour"]) == 7
    assert dm.num_classes == {"shape": 5, "colour": 7, "count": 3}
    assert dm.num_answers == len(dm.answer_vocab) == 20 and dm.answer_vocab[:2] == ("no", "yes")


def test_setup_caches_splits(dm):
    val = dm.val_dataset
    dm.setup("fit")
    dm.setup("test")
    dm.setup("validate")
    assert dm.val_dataset is val and len(dm.test_dataset) == 50


def test_caption_sampling_is_deterministic_per_epoch():
    a, b = CaptionPairSampler(100, 5, "random", seed=3), CaptionPairSampler(100, 5, "random", seed=3)
    assert list(a) == list(b)  # epoch 0
    epoch1 = list(a)  # without set_epoch the sampler counts epochs itself
    b.set_epoch(1)
    assert list(b) == epoch1 != list(CaptionPairSampler(100, 5, "random", seed=3))
    assert sorted(i // 5 for i in epoch1) == list(range(100))  # each image once per epoch
    every = list(CaptionPairSampler(100, 5, "all", seed=0))
    assert sorted(every) == list(range(500))
    with pytest.raises(ValueError, match=r"data\.caption_sampling"):
        CaptionPairSampler(10, 5, "some")


def test_caption_sampler_shards_across_ranks_without_overlap():
    whole = CaptionPairSampler(101, 5, "all", seed=1).indices(0)
    shards = [CaptionPairSampler(101, 5, "all", seed=1, num_replicas=2, rank=r) for r in range(2)]
    for s in shards:
        s.set_epoch(0)
    got = [list(s) for s in shards]
    assert len(got[0]) == len(got[1]) == len(shards[0]) == 505 // 2
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == sorted(whole[: 2 * 252].tolist())
    with pytest.raises(ValueError, match="rank 2"):
        CaptionPairSampler(10, 5, num_replicas=2, rank=2)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_caption_sampler_resumes_mid_epoch_through_a_stateful_loader(num_workers):
    """What a checkpoint keeps: the epoch and the position in it, so a new loader continues with
    the next batch even when it is iterated before Lightning calls set_epoch."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader():
        sampler = CaptionPairSampler(64, 5, "random", seed=2)
        return sampler, StatefulDataLoader(list(range(320)), batch_size=8, sampler=sampler, drop_last=True, num_workers=num_workers)

    sampler, dl = loader()
    sampler.set_epoch(3)
    it = iter(dl)
    seen = [next(it).tolist() for _ in range(3)]
    state = dl.state_dict()
    rest = [b.tolist() for b in it]
    sampler2, dl2 = loader()
    dl2.load_state_dict(state)
    resumed = [b.tolist() for b in dl2]
    assert resumed == rest and len(seen) + len(rest) == 8
    if num_workers == 0:  # with workers the sampler runs ahead (prefetch); the loader's state does not
        assert sampler.state_dict() == {"epoch": 3, "yielded": 64}


def test_caption_sampling_all_and_extras(tokenizer):
    module = ShapesDataModule(
        tokenizer=tokenizer, caption_sampling="all", train_negatives=True, train_questions=True, padding="longest", **SMALL
    )
    module.setup("fit")
    loader = module.train_dataloader()
    assert len(loader) == 320 * 5 // 64
    batch = next(iter(loader))
    length = batch.input_ids.shape[1]
    assert length <= 32 and batch.neg_input_ids.shape == (64, length)
    assert batch.question_input_ids.shape == (64, 3, length) and batch.answers.shape == (64, 3)


class _Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):
        assert isinstance(batch, ImageTextBatch)
        self.seen.setdefault(self.current_epoch, []).extend(batch.text_ids.tolist())
        return self.layer(batch.images.mean().view(1, 1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`", "ignore:.*LeafSpec")
def test_lightning_sets_the_epoch(tokenizer, tmp_path):
    def run():
        module = ShapesDataModule(tokenizer=tokenizer, **SMALL)
        model = _Recorder()
        trainer = L.Trainer(
            max_epochs=2,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            default_root_dir=tmp_path,
        )
        trainer.fit(model, datamodule=module)
        return model.seen

    first, second = run(), run()
    assert first == second
    assert first[0] != first[1]


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(image_size=16), r"data\.image_size.*>= 32"),
        (dict(captions_per_image=0), r"data\.captions_per_image"),
        (dict(train_size=-1), r"data\.train_size"),
        (dict(shapes=["circle", "hexagon"]), r"data\.shapes.*hexagon.*allowed.*star"),
        (dict(colours=["red", "pink"]), r"data\.colours.*pink"),
        (dict(caption_sampling="first"), r"data\.caption_sampling.*random.*all"),
        (dict(padding="none"), r"data\.padding"),
        (dict(std=0.0), r"data\.std"),
        (dict(mean=[0.5, 0.5]), r"data\.mean"),
        (dict(count_weights=[1, 1]), r"data\.count_weights"),
        (dict(batch_size=0), r"data\.batch_size"),
        (dict(val_size=10**7), r"split 'val'.*data\.val_size=10000000"),
        (dict(train_size=10**7, unique_train_scenes=True), r"split 'train'.*data\.train_size=10000000"),
        (dict(val_size=700, count_weights=[1, 0, 0]), r"split 'val'.*only 630"),
    ],
)
def test_invalid_options_name_the_config_key(tokenizer, overrides, key):
    with pytest.raises(ValueError, match=key):
        ShapesDataModule(tokenizer=tokenizer, **{**SMALL, **overrides})


def test_batch_larger_than_train_split(tokenizer):
    module = ShapesDataModule(tokenizer=tokenizer, **{**SMALL, "train_size": 40})
    module.setup("fit")
    with pytest.raises(ValueError, match=r"data\.batch_size=64.*data\.train_size=40"):
        module.train_dataloader()


def test_hydra_config_instantiates(tokenizer):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    lines = [line for line in CONFIG.read_text().splitlines() if line and not line.startswith("#")]
    options = [line for line in lines if not line.startswith("_target_")]
    assert all("#" in line for line in options), "every option needs a comment"
    assert not any(line.startswith("tokenizer") for line in lines)
    cfg = OmegaConf.load(CONFIG)
    assert cfg._target_ == "mmresearch.data.datamodule.ShapesDataModule"
    cfg.train_size, cfg.val_size, cfg.test_size = 128, 32, 32
    module = instantiate(cfg, tokenizer=tokenizer)
    assert isinstance(module, ShapesDataModule)
    assert module.batch_size == 128 and module.image_size == 64 and module.mean == (0.5, 0.5, 0.5)
    defaults = ShapesDataModule.__init__.__defaults__
    assert len(options) == len(defaults) - 1  # every constructor option but the tokenizer is in the file


def test_training_split_keeps_the_count_mix_and_groups_repeated_scenes(tokenizer):
    module = ShapesDataModule(tokenizer=tokenizer, train_size=3000, val_size=700, test_size=10, image_size=32, questions_per_image=0)
    train, val = module.dataset("train"), module.dataset("val")
    counts = torch.bincount(train.labels[:, 2], minlength=3).float() / len(train)
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.04)  # not starved of one-object scenes
    assert len(set(train.descriptions)) < len(train)  # one-object scenes repeat (only 630 exist)
    for i in range(len(train)):
        first = int(train.scene_ids[i])
        assert first <= i and train.descriptions[first] == train.descriptions[i]
    assert len(set(val.descriptions)) == len(val)  # evaluation splits stay unique
    assert torch.equal(val.scene_ids, torch.arange(len(val)))
    unique = ShapesDataModule(tokenizer=tokenizer, train_size=3000, val_size=10, test_size=10, image_size=32,
                              unique_train_scenes=True, questions_per_image=0).dataset("train")
    assert len(set(unique.descriptions)) == len(unique)
