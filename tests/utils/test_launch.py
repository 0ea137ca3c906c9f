"""DDP children of a Hydra job: one sweep point's overrides and its own output directory."""

import sys

from mmresearch.utils import launch


def test_child_command_is_this_job_not_the_sweep(monkeypatch, tmp_path):
    from types import SimpleNamespace

    hydra_cfg = SimpleNamespace(
        overrides=SimpleNamespace(task=["trainer=ddp_cpu", "seed=1", "hydra.run.dir=elsewhere"]),
        runtime=SimpleNamespace(output_dir=str(tmp_path / "multirun" / "3")),
        job=SimpleNamespace(name="train", config_name="train"),
    )
    hydra_cfg.runtime.config_sources = [SimpleNamespace(provider="main", path="file:///repo/conf"),
                                        SimpleNamespace(provider="command-line", path="file:///my/configs")]
    import hydra.core.hydra_config as hc
    import hydra.utils as hu

    monkeypatch.setattr(hc.HydraConfig, "get", staticmethod(lambda: hydra_cfg))
    monkeypatch.setattr(hu, "get_original_cwd", lambda: str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["train.py", "--multirun", "trainer=ddp_cpu", "seed=0,1"])
    command, cwd = launch.hydra_job_subprocess_cmd(local_rank=1)
    assert "--multirun" not in command and "seed=0,1" not in command
    assert "seed=1" in command and "trainer=ddp_cpu" in command and "hydra.run.dir=elsewhere" not in command
    assert f'hydra.run.dir="{tmp_path / "multirun" / "3"}"' in command
    assert "hydra.output_subdir=null" in command and "hydra.job.name=train_ddp_process_1" in command
    assert cwd == str(tmp_path)
    assert "--config-name=train" in command and "--config-dir=/my/configs" in command


def test_fix_replaces_lightnings_function():
    from lightning.fabric.strategies.launchers import subprocess_script

    launch.install_hydra_ddp_fix()
    assert subprocess_script._hydra_subprocess_cmd is launch.hydra_job_subprocess_cmd


def test_no_cluster_plugin_outside_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    assert launch.cluster_plugins() == []
