"""Strict composition: every model-part config group that is set is used by the model built, and
every group it uses is set; the error is one line naming the group, the model and why."""

import pytest
from hydra import compose, initialize_config_dir

from mmresearch.data.tokenizer import build_shapes_tokenizer
from mmresearch.models.builder import build_model, check_groups_used
from mmresearch.train import CONFIG_DIR
from mmresearch.utils.errors import ConfigError

from helpers import FAST


def _cfg(overrides, fast=True):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[*(FAST if fast else []), *overrides], return_hydra_config=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        # ALBEF's ITC is its own loss: a loss group would be recorded but never trained
        (["model=albef", "loss=siglip"], r"^loss=siglip is not used by model=albef: its contrastive objective model\.objectives\.itc is ALBEF's own loss"),
        # ViLT without its contrastive first stage
        (["model=vilt", "image_encoder=vit_tiny", "loss=siglip"], r"^loss=siglip is not used by model=vilt: only model\.objectives\.itc uses it, and it is not trained \(weight 0\)"),
        (["experiment=vilt_shapes", "model.objectives.itc.weight=0"], r"^loss=infonce is not used by model=vilt: only model\.objectives\.itc uses it"),
        (["experiment=albef_vqa", "temperature=learnable"], r"^temperature=learnable is not used by model=albef: only model\.objectives\.itc uses it"),
        # a group the model uses must be set
        (["~loss"], r"^model=dual_encoder uses the config group loss, which is not set"),
        (["model=vilt", "image_encoder=vit_tiny", "model.objectives.itc.weight=1"], r"^model=vilt uses the config group loss, which is not set"),
    ],
)
def test_a_group_set_but_not_used_or_used_but_unset_fails_in_one_line(overrides, message):
    cfg = _cfg(overrides)
    with pytest.raises(ConfigError, match=message) as caught:
        check_groups_used(cfg)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("overrides", [[], ["model=albef"], ["experiment=albef_shapes"], ["experiment=vilt_shapes"], ["experiment=vilt_vqa"],
                                       ["experiment=albef_vqa"], ["model=vilt", "image_encoder=vit_tiny"], ["experiment=lit_flickr8k"],
                                       ["loss=siglip", "temperature=siglip"]])
def test_the_shipped_configs_use_every_group_they_set(overrides):
    check_groups_used(_cfg(overrides, fast="experiment=lit_flickr8k" not in overrides))


def test_the_run_config_records_only_what_is_trained():
    """``model=albef`` unsets the loss group: the config stored with the run (results.json, the
    checkpoint) does not name a loss that was never used."""
    assert _cfg(["model=albef"]).get("loss") is None
    vilt = _cfg(["model=vilt", "image_encoder=vit_tiny"])
    assert vilt.get("loss") is None and vilt.get("temperature") is None


def test_an_objective_of_weight_zero_is_not_built():
    cfg = _cfg(["experiment=vilt_shapes", "image_encoder.model_kwargs.depth=1", "model.objectives.mlm.weight=0"])
    model = build_model(cfg, build_shapes_tokenizer())
    assert list(model.objectives) == ["itm", "itc"] and model.mlm_head is None


def test_an_objective_the_model_cannot_train_is_refused_at_build():
    cfg = _cfg(["+model.objectives.mlm={_target_: mmresearch.modules.objectives.MLMObjective, weight: 1.0, probability: 0.15, whole_word: false, "
                "mask_replace_prob: 0.8, random_replace_prob: 0.1, distill: false}"])
    with pytest.raises(ConfigError, match=r"model\.objectives\.mlm \(MLMObjective\) cannot be trained by DualEncoder: it needs mlm_head, mlm_text_states"):
        build_model(cfg, build_shapes_tokenizer())
