"""The config an evaluation runs with: other data keeps the run's preprocessing unless the command
line sets it; ``data.*`` / ``model.*`` keys change the run's config and must exist there."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from real_fixtures import tiny_tokenizer

from mmresearch.train import CONFIG_DIR
from mmresearch.utils.checkpoint import config_container
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.eval_config import eval_run_config
from mmresearch.utils.instantiate import build

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def _eval_cfg(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="eval", overrides=["ckpt_path=x", *overrides])


def _stored(cfg):
    """The run config as a checkpoint stores it (resolved plain containers)."""
    return OmegaConf.create(config_container(cfg))


@pytest.fixture
def lit_run(compose_cfg):
    """A LiT-style real-data run: ImageNet statistics, 48 tokens, 224 px, lower-cased captions."""
    return _stored(compose_cfg(["data=flickr8k_mini", f"data.transform.mean={IMAGENET[0]}", f"data.transform.std={IMAGENET[1]}",
                                "data.max_text_length=48", "data.image_size=224", "data.lowercase=true", "data.transform.model=resnet10t"]))


def test_other_data_keeps_the_runs_preprocessing(lit_run, tmp_path):
    cfg = eval_run_config(lit_run, _eval_cfg(["data=coco", f"data.root={tmp_path}"]), data_keys=["root"])
    data = cfg.data
    assert data.train.path.endswith("captions_train2017.json") and data.root == str(tmp_path)  # coco's sources
    assert (list(data.transform.mean), list(data.transform.std)) == IMAGENET and data.max_text_length == 48
    assert data.image_size == 224 and data.lowercase is True and data.transform.model == "resnet10t"
    dm = build(cfg, "data", tokenizer=tiny_tokenizer())  # what the evaluation actually uses
    assert (list(dm.mean), list(dm.std)) == IMAGENET and dm.max_text_length == 48 and dm.image_size == 224 and dm.lowercase


def test_preprocessing_given_on_the_command_line_wins(lit_run, tmp_path):
    eval_cfg = _eval_cfg(["data=coco", f"data.root={tmp_path}", "data.max_text_length=20", "data.transform.std=[0.5,0.5,0.5]"])
    data = eval_run_config(lit_run, eval_cfg, data_keys=["root", "max_text_length", "transform.std"]).data
    assert data.max_text_length == 20 and list(data.transform.std) == [0.5] * 3 and list(data.transform.mean) == IMAGENET[0]


def test_built_in_data_keeps_the_runs_normalisation_and_text_length(compose_cfg):
    run = _stored(compose_cfg(["data.mean=[0.4,0.4,0.4]", "data.std=[0.2,0.2,0.2]", "data.max_text_length=24", "data.padding=max_length"]))
    cfg = eval_run_config(run, _eval_cfg(["data=shapes", "data.test_size=32"]), data_keys=["test_size"])
    dm = build(cfg, "data", tokenizer=tiny_tokenizer())
    assert dm.mean == (0.4,) * 3 and dm.std == (0.2,) * 3 and dm.max_text_length == 24 and dm.padding == "max_length"
    assert dm.split_sizes["test"] == 32 and dm.split_sizes["train"] == 23040  # the shapes option's own sizes


def test_data_keys_alone_change_the_runs_data(compose_cfg):
    run = _stored(compose_cfg(["data.max_text_length=24", "data.test_size=64"]))
    cfg = eval_run_config(run, _eval_cfg(["++data.test_size=200"]))
    assert cfg.data.test_size == 200 and cfg.data.max_text_length == 24
    assert {k: v for k, v in cfg.data.items() if k != "test_size"} == {k: v for k, v in run.data.items() if k != "test_size"}


def test_unknown_data_and_model_keys_name_the_key_they_probably_mean(compose_cfg):
    run = _stored(compose_cfg([]))
    with pytest.raises(ConfigError) as err:
        eval_run_config(run.copy(), _eval_cfg(["++data.test_sze=200"]))
    assert str(err.value) == "data.test_sze is not a key of the evaluated run's config. Did you mean data.test_size?"
    with pytest.raises(ConfigError, match=r"^model\.retrieval\.first_stage is not a key of the evaluated run's config\. The keys of model: "):
        eval_run_config(run.copy(), _eval_cfg(["++model.retrieval.first_stage=none"]))


def test_model_keys_change_the_runs_model(compose_cfg):
    run = _stored(compose_cfg(["experiment=vilt_shapes"]))
    cfg = eval_run_config(run, _eval_cfg(["++model.retrieval.first_stage=none", "++model.retrieval.top_k=4"]))
    assert cfg.model.retrieval.first_stage == "none" and cfg.model.retrieval.top_k == 4
    assert cfg.model.retrieval.batch_size == run.model.retrieval.batch_size


def test_a_timm_default_is_not_carried_to_another_kind_of_data(lit_run, compose_cfg):
    run = lit_run.copy()
    run.data.image_size = None  # the image encoder's size from timm: means nothing to the built-in data
    data = eval_run_config(run, _eval_cfg(["data=shapes"])).data
    assert data.image_size == 64 and data.mean == IMAGENET[0] and data.max_text_length == 48
