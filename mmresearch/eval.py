"""Evaluate a checkpoint of any model family: ``mmr-eval ckpt_path=... [data=...] [eval=...]``.

Runs the test loop (retrieval, compositionality probe), the after-test evaluations of
``eval.callbacks`` (zero-shot, linear probe, plots) and optionally an embedding export with a FAISS
index, then writes ``results.json`` like training does (``config`` is the evaluated model's run
config with the data used; ``eval_config`` is this command's config). ``data.*`` and ``model.*``
keys change the run's config; ``data=<option>`` keeps the run's preprocessing
(:mod:`mmresearch.utils.eval_config`).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Optional

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from mmresearch.modules.encoders.compile import keep_eager
from mmresearch.train import CONFIG_DIR, setup_run
from mmresearch.models.loading import load_model
from mmresearch.utils.checkpoint import config_container, resolve_checkpoint_path
from mmresearch.utils.command_line import checked_command_line, command_line_keys
from mmresearch.utils.eval_config import eval_run_config
from mmresearch.utils.instantiate import build, build_dict
from mmresearch.utils.console import log_files, setup_console
from mmresearch.utils.results import format_paths, format_table, write_results

log = logging.getLogger("mmresearch.eval")


def evaluate(cfg: DictConfig) -> Dict[str, Any]:
    """Evaluate ``cfg.ckpt_path``; returns the test metrics."""
    started = time.time()
    out_dir = setup_run(cfg)
    path = resolve_checkpoint_path(cfg.ckpt_path)
    data_keys = command_line_keys("data")  # the run's preprocessing is kept unless these set it
    model, run_cfg, tokenizer = load_model(
        path, allow_unsafe=bool(cfg.allow_unsafe_checkpoint), configure=lambda stored: eval_run_config(stored, cfg, data_keys)
    )
    if not cfg.get("compile", False):  # the run's encoder compile settings are for training
        keep_eager(model)
    datamodule = build(run_cfg, "data", tokenizer=tokenizer)
    precision = cfg.get("precision") or OmegaConf.select(run_cfg, "trainer.precision") or cfg.trainer.precision
    trainer: L.Trainer = build(
        cfg, "trainer", callbacks=build_dict(cfg, "eval.callbacks"), logger=build_dict(cfg, "logger") or False, precision=precision
    )
    trainer.test(model, datamodule=datamodule, verbose=False)  # the one table is the final one below
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    export = cfg.eval.get("export") or {}
    exported: Optional[str] = None
    if export.get("enabled") and trainer.is_global_zero:
        from mmresearch.evaluation.export import export_embeddings

        model.to(trainer.strategy.root_device)
        exported = str(export_embeddings(model, datamodule, export.dir, split=export.split, index=export.index, checkpoint=str(path.resolve())))
        log.info("embeddings and FAISS index written to %s (search: mmr-search %s \"a red circle\")", exported, exported)
    if trainer.is_global_zero:
        result_path = write_results(
            out_dir,
            metrics,
            run_cfg,
            time.time() - started,
            extra={"checkpoint": str(path.resolve()), "export_dir": exported, "eval_config": config_container(cfg)},
        )
        log.info("\n%s", format_table(metrics, title=f"test metrics of {path.name} ({result_path})"))
        log.info("%s", format_paths({"embeddings": exported, "log": log_files()}))
    return metrics


@checked_command_line("eval", run_config_keys=("data", "model"))  # data.*/model.*: keys of the evaluated run's config
@hydra.main(config_path=CONFIG_DIR, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    setup_console()
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise SystemExit("mmr-eval needs ckpt_path=<checkpoint file or run directory>")
    evaluate(cfg)


if __name__ == "__main__":
    main()
