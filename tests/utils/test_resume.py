"""Which checkpoint a run resumes from: ``ckpt_path`` must exist (``last`` included), ``resume=auto``
takes the newest of the run directory (or none), ``resume=never`` none; a checkpoint that cannot be
read or belongs to another model family is one line naming the file, before any data is built."""

from __future__ import annotations

import os
import time

import pytest
import torch

import mmresearch.train as train_module
from mmresearch.data.datamodule import ShapesDataModule
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build_dict

DUAL = "mmresearch.models.dual_encoder.DualEncoder"


def _save(path, step, target=DUAL, age=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {}, "mmresearch_config": {"model": {"_target_": target}}}, path)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def _resume(cfg, tmp_path):
    return train_module.resume_path(cfg, tmp_path, build_dict(cfg, "callbacks"))


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if any split of the built-in data is generated."""
    def generated(self, *args, **kwargs):
        raise AssertionError("data was generated")

    monkeypatch.setattr(ShapesDataModule, "setup", generated)
    monkeypatch.setattr(ShapesDataModule, "dataset", generated)


def test_last_without_a_checkpoint_is_an_error_before_any_data(compose_cfg, tmp_path, no_data):
    cfg = compose_cfg(["ckpt_path=last"])
    with pytest.raises(ConfigError) as err:
        train_module.train(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("ckpt_path=last: no last checkpoint (last*.ckpt) in ") and str(tmp_path / "checkpoints") in message
    assert "resume=auto" in message and "save_last" not in message


def test_last_takes_the_furthest_last_checkpoint(compose_cfg, tmp_path):
    cfg = compose_cfg(["ckpt_path=last"])
    _save(tmp_path / "checkpoints" / "last.ckpt", 6)
    newest = _save(tmp_path / "checkpoints" / "last-step.ckpt", 8, age=5)  # further on, though older on disk
    _save(tmp_path / "hpc_ckpt_1.ckpt", 10)  # not a "last" checkpoint
    assert _resume(cfg, tmp_path) == str(newest)


def test_missing_checkpoint_file_names_the_key(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"ckpt_path='.*nope\.ckpt': no such checkpoint file"):
        _resume(compose_cfg([f"ckpt_path={tmp_path / 'nope.ckpt'}"]), tmp_path)


def test_auto_resumes_the_furthest_checkpoint_or_starts_fresh(compose_cfg, tmp_path):
    cfg = compose_cfg(["resume=auto"])
    assert _resume(cfg, tmp_path) is None  # nothing there: from scratch
    _save(tmp_path / "checkpoints" / "last.ckpt", 6)
    step = _save(tmp_path / "checkpoints" / "last-step.ckpt", 8)
    assert _resume(cfg, tmp_path) == str(step)
    hpc = _save(tmp_path / "hpc_ckpt_1.ckpt", 8, age=1)  # the preemption checkpoint wins a tie
    assert _resume(cfg, tmp_path) == str(hpc)
    later = _save(tmp_path / "checkpoints" / "last-step.ckpt", 12)  # a later step after a resume from it
    assert _resume(cfg, tmp_path) == str(later)


def test_never_ignores_the_run_directory_outside_slurm(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    _save(tmp_path / "checkpoints" / "last.ckpt", 6)
    _save(tmp_path / "hpc_ckpt_1.ckpt", 6)
    assert _resume(compose_cfg(["resume=never"]), tmp_path) is None


def test_never_refuses_the_implicit_slurm_resume(compose_cfg, tmp_path, monkeypatch):
    """Lightning resumes from hpc_ckpt_* by itself under SLURM when ckpt_path is None."""
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "mmr-train")
    hpc = _save(tmp_path / "hpc_ckpt_2.ckpt", 6)
    with pytest.raises(ConfigError, match=rf"resume=never, but {hpc} is a preemption checkpoint .* resume=auto"):
        _resume(compose_cfg(["resume=never"]), tmp_path)


def test_resume_default_comes_from_the_environment(compose_cfg, monkeypatch):
    monkeypatch.delenv("MMR_RESUME", raising=False)
    assert compose_cfg([]).resume == "never"
    monkeypatch.setenv("MMR_RESUME", "auto")  # what the submitit launcher configs set for their jobs
    assert compose_cfg([]).resume == "auto"


def test_checkpoint_of_another_family_is_one_line_before_any_data(compose_cfg, tmp_path, no_data):
    other = _save(tmp_path / "vilt.ckpt", 4, target="mmresearch.models.vilt.ViLT")
    with pytest.raises(ConfigError) as err:
        train_module.train(compose_cfg([f"ckpt_path={other}"]))
    assert str(err.value) == (f"ckpt_path={other} holds a checkpoint of mmresearch.models.vilt.ViLT and this run builds {DUAL} "
                              "(model._target_): a run resumes only its own model family")


def test_corrupt_checkpoint_is_one_line_before_any_data(compose_cfg, tmp_path, no_data):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"x" * 100)
    with pytest.raises(ConfigError) as err:
        train_module.train(compose_cfg([f"ckpt_path={bad}"]))
    assert str(err.value).startswith(f"ckpt_path={bad} is not a readable checkpoint")
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("launcher", ["submitit_slurm", "submitit_local"])
def test_submitit_launchers_run_their_jobs_with_resume_auto(launcher):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=train_module.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
        plain = compose("train", overrides=[], return_hydra_config=True)
    assert dict(cfg.hydra.job.env_set) == {"TOKENIZERS_PARALLELISM": "false", "MMR_RESUME": "auto"}
    assert "MMR_RESUME" not in plain.hydra.job.env_set


def test_command_line_after_the_templates_resume_auto_wins(compose_cfg):
    assert compose_cfg(["resume=auto", "resume=never"]).resume == "never"  # slurm/launch.sh: resume=auto "$@"
