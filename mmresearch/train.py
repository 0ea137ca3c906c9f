"""Train (then test) a model from the Hydra config tree in ``conf/``.

Usage::

    mmr-train                                   # dual encoder on the built-in shapes data
    mmr-train loss=siglip temperature=siglip    # swap one part
    mmr-train --multirun seed=0,1,2             # a sweep
    python -m mmresearch.train trainer=ddp_cpu  # 2 processes on the CPU
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mmresearch.callbacks.data_quality import DataQuality
from mmresearch.callbacks.preemption import PreemptionCheckpoint
from mmresearch.models.builder import build_model
from mmresearch.utils.checkpoint import config_container, load_checkpoint
from mmresearch.utils.command_line import checked_command_line
from mmresearch.utils.config_checks import check_config_values
from mmresearch.utils.instantiate import build, build_dict

from mmresearch.utils.launch import cluster_plugins, install_hydra_ddp_fix
from mmresearch.utils.console import log_files, setup_console
from mmresearch.utils.run_info import git_commit
from mmresearch.utils.results import format_paths, format_table, write_results
from mmresearch.utils.resume import resume_checkpoint

log = logging.getLogger("mmresearch.train")
from mmresearch import CONFIG_DIR  # noqa: E402  (re-exported: mmresearch.train.CONFIG_DIR)


def _output_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_dir)


def hydra_record() -> Optional[Dict[str, Any]]:
    """This job's command-line overrides and config-group choices (what ``mmr-ablate`` groups by)."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return {"overrides": list(hc.overrides.task), "choices": {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")},
            "job_num": hc.job.get("num"), "mode": str(hc.mode)}


def resume_path(cfg: DictConfig, out_dir: Path, callbacks: List[Any]) -> Optional[str]:
    """The checkpoint file this run resumes from (``ckpt_path``, else with ``resume=auto`` this
    run directory's furthest checkpoint), or None; a missing, unreadable or other-family
    checkpoint is a ConfigError (:func:`mmresearch.utils.resume.resume_checkpoint`)."""
    return resume_checkpoint(cfg, out_dir, callbacks)


def setup_run(cfg: DictConfig) -> Path:
    """Checks the config's typed values, sets the threads and seeds of this process; returns the
    run's output directory."""
    check_config_values(cfg)
    git_commit()  # the commit of the code this run imported (cached for results.json)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    L.seed_everything(cfg.seed, workers=True)
    return _output_dir(cfg)


def test_averaged_and_trained(trainer: L.Trainer, model: L.LightningModule, datamodule: Any, ckpt: str) -> Dict[str, Any]:
    """With weight averaging (``callbacks.ema``) a checkpoint's ``state_dict`` holds the averaged
    weights and ``current_model_state`` the trained ones: both are tested, the averaged as
    ``test/*`` (what the checkpoint gives ``mmr-eval``), the trained as ``test/trained/*``. The
    weights are loaded here, not through ``ckpt_path`` (the averaging callback would load the
    trained ones for both)."""
    checkpoint = load_checkpoint(ckpt)
    metrics: Dict[str, Any] = {}
    for prefix, key in (("test/", "state_dict"), ("test/trained/", "current_model_state")):
        if key not in checkpoint:
            continue
        model.load_state_dict(checkpoint[key])
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update({prefix + k[len("test/"):]: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    return metrics


def train(cfg: DictConfig) -> Dict[str, Any]:
    """Fit, test the best checkpoint and write ``results.json``; returns the test metrics."""
    started = time.time()
    out_dir = setup_run(cfg)
    callbacks = build_dict(cfg, "callbacks")
    ckpt_path = resume_path(cfg, out_dir, callbacks)  # before any data is built

    tokenizer = build(cfg, "tokenizer")
    datamodule = build(cfg, "data", tokenizer=tokenizer)
    model = build_model(cfg, tokenizer, datamodule)
    model.run_config = config_container(cfg)
    if getattr(datamodule, "skip_ledger", None) is not None and not any(isinstance(c, DataQuality) for c in callbacks):
        callbacks.append(DataQuality())  # the skip limit holds even without the callbacks config entry
    loggers = build_dict(cfg, "logger")
    trainer: L.Trainer = build(cfg, "trainer", callbacks=callbacks, logger=loggers or False, plugins=cluster_plugins())
    for logger in loggers:  # the whole run config (W&B config panel, CSV hparams.yaml)
        logger.log_hyperparams(model.run_config)

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    resumed_from = trainer.ckpt_path
    preemption = next((c for c in callbacks if isinstance(c, PreemptionCheckpoint)), None)
    if preemption is not None and preemption.preempted:
        # the job is requeued (or the user resumes by hand) from the checkpoint just written
        finish_wandb(loggers)
        preemption.requeue(trainer.is_global_zero)
        return {"preempted_at_step": float(trainer.global_step)}
    if preemption is not None:
        preemption.remove_stale_checkpoints(trainer)
    metrics: Dict[str, Any] = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if cfg.get("test", True):
        # the best checkpoint by its path ("best" warns when several ModelCheckpoint callbacks exist);
        # verbose=False: the one table of the run is the final one below
        ckpt: Optional[str] = (trainer.checkpoint_callback.best_model_path or None) if trainer.checkpoint_callback else None
        if ckpt and any(isinstance(c, WeightAveraging) for c in callbacks):
            metrics.update(test_averaged_and_trained(trainer, model, datamodule, ckpt))
        else:
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
            metrics.update({k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    metrics = {k: float(v) for k, v in metrics.items()}
    if trainer.is_global_zero:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
        extra = {"best_checkpoint": best or None, "resumed_from": resumed_from, "hydra": hydra_record()}
        ledger = getattr(datamodule, "skip_ledger", None)
        if ledger is not None:  # real data: what was skipped at set-up and in each epoch
            extra["data_quality"] = ledger.summary()
        path = write_results(out_dir, metrics, cfg, time.time() - started, extra=extra)
        shown = {k: v for k, v in metrics.items() if k.startswith("test/")} or metrics
        log.info("\n%s", format_table(shown, title=f"{'test' if cfg.get('test', True) else 'val'} metrics ({path})"))
        log.info("%s", format_paths({"best checkpoint": best, "log": log_files()}))
    finish_wandb(loggers)
    return metrics


def finish_wandb(loggers) -> None:
    """End this job's W&B run, so the next point of a sweep in this process starts its own
    (WandbLogger otherwise reuses the run still in progress)."""
    if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        import wandb

        wandb.finish()


@checked_command_line("train")
@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> Optional[float]:
    """Hydra entry point; returns ``cfg.optimized_metric`` for sweepers when set."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    setup_console()
    install_hydra_ddp_fix()
    metrics = train(cfg)
    key = cfg.get("optimized_metric")
    return metrics.get(key) if key else None


if __name__ == "__main__":
    main()
