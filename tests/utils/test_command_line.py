"""Command-line overrides checked before Hydra runs: a key that does not exist gets the key it
probably meant (one line), everything Hydra accepts still passes; mmr-eval hands ``data.*`` and
``model.*`` keys on to the evaluated run's config."""

from __future__ import annotations

import pytest

from mmresearch.utils.command_line import misspelled_override, pass_to_run_config


@pytest.mark.parametrize(
    "config, argv, message",
    [
        ("train", ["trainer.max_epoch=3"], "trainer.max_epoch is not a config key. Did you mean trainer.max_epochs?"),
        ("train", ["loss=triplet", "loss.margn=0.1"], "loss.margn is not a config key. Did you mean loss.margin?"),
        ("train", ["--multirun", "seed=0,1", "trainr.max_epochs=1"], "trainr.max_epochs is not a config key. Did you mean trainer.max_epochs?"),
        # a key of one option of a swept group: the sweep would fail at that point
        ("train", ["-m", "loss=triplet,infonce", "loss.margin=0.1"], "loss.margin is not a config key. The keys of loss: "
         "_target_, chunk_size, gather_with_grad, label_smoothing, local_loss"),
        ("eval", ["ckpt_path=x", "precison=32"], "precison is not a config key. Did you mean precision?"),
    ],
)
def test_misspelled_keys_get_a_suggestion(config, argv, message):
    assert misspelled_override(config, argv) == message


@pytest.mark.parametrize(
    "config, argv",
    [
        ("train", []),
        ("train", ["loss=siglip", "temperature=siglip", "trainer.max_epochs=2", "data.train_size=64"]),
        ("train", ["+callbacks.fault._target_=fault_injection.SignalAtStep", "+callbacks.fault.step=9", "++trainer.max_epochs=2", "~logger"]),
        ("train", ["--multirun", "loss=infonce,siglip", "seed=range(0,3)", "optimizer.lr=interval(1e-4,1e-2)"]),
        ("train", ["-m", "hydra/launcher=submitit_local", "seed=0,1", "hydra.sweep.dir=/tmp/x"]),
        ("train", ["experiment=albef_shapes", "model.queue_size=48"]),
        ("train", ["--config-name=train", "hydra.run.dir=\"/tmp/a b\"", "hydra.job.name=x_ddp_process_1", "hydra.output_subdir=null"]),
        ("eval", ["ckpt_path=x", "eval=export", "trainer.enable_progress_bar=false"]),
        ("eval", ["ckpt_path=x", "data=coco", "data.root=/data/coco"]),
    ],
)
def test_what_hydra_accepts_passes(config, argv):
    assert misspelled_override(config, argv) is None


def test_other_problems_are_left_to_hydra():
    assert misspelled_override("train", ["loss=infonse"]) is None  # Hydra lists the options itself
    assert misspelled_override("train", ["seed=[1,"]) is None  # a parse error
    assert misspelled_override("train", ["--help"]) is None


def test_eval_passes_run_keys_on_as_additions():
    argv = ["-m", "ckpt_path=x", "data.test_size=200", "model.retrieval.first_stage=none", "++data.seed=1", "data.val_size=1,2"]
    assert pass_to_run_config(argv, ("data", "model")) == [
        "-m", "ckpt_path=x", "++data.test_size=200", "++model.retrieval.first_stage=none", "++data.seed=1", "++data.val_size=1,2"]
    # with a data option chosen, its keys are checked against that option's config as usual
    assert pass_to_run_config(["data=coco", "data.root=/c", "model.x=1"], ("data", "model")) == ["data=coco", "data.root=/c", "++model.x=1"]
    assert misspelled_override("eval", pass_to_run_config(["ckpt_path=x", "data.test_size=3"], ("data", "model"))) is None
    assert misspelled_override("eval", ["ckpt_path=x", "data=coco", "data.rot=/c"]) == "data.rot is not a config key. Did you mean data.root?"
