"""${mmr.*} resolvers: W&B names and groups from the Hydra job."""

from types import SimpleNamespace

from hydra.types import RunMode

from mmresearch.utils import resolvers


def _fake(monkeypatch, mode, overrides, override_dirname):
    cfg = SimpleNamespace(mode=mode, job=SimpleNamespace(name="train", override_dirname=override_dirname),
                          sweep=SimpleNamespace(dir="multirun/train/2026-11-22_10-00-00"), overrides=SimpleNamespace(task=overrides))
    monkeypatch.setattr(resolvers, "_hydra", lambda: cfg)


def test_multirun_names_group_and_setting(monkeypatch):
    _fake(monkeypatch, RunMode.MULTIRUN, ["seed=1", "loss=triplet"], "loss=triplet,seed=1")
    assert resolvers.run_name("x") == "loss=triplet,seed=1"
    assert resolvers.sweep_group() == "train/2026-11-22_10-00-00"
    assert resolvers.setting() == "loss=triplet"


def test_single_run_has_no_group(monkeypatch):
    _fake(monkeypatch, RunMode.RUN, [], "")
    assert resolvers.run_name("train") == "train" and resolvers.sweep_group() is None and resolvers.setting() == "default"
    monkeypatch.setattr(resolvers, "_hydra", lambda: None)
    assert resolvers.run_name("train") == "train" and resolvers.sweep_group() is None


def test_log_version_keeps_earlier_metrics_of_a_resumed_run(tmp_path):
    assert resolvers.log_version(str(tmp_path / "csv")) == ""
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("step\n")
    assert resolvers.log_version(str(tmp_path / "csv")) == "restart1"
    (tmp_path / "csv" / "restart1").mkdir()
    assert resolvers.log_version(str(tmp_path / "csv")) == "restart2"
