"""Evaluate a checkpoint of any model family: ``mmr-eval ckpt_path=... [data=...] [eval=...]``, or a
pretrained model as it is, with no training: ``mmr-eval model=clip model.pretrained=... data=...``.

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
from typing import Any, Dict, List, Optional

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from mmresearch.modules.encoders.compile import keep_eager
from mmresearch.train import CONFIG_DIR, setup_run
from mmresearch.models.builder import build_model
from mmresearch.models.loading import load_model
from mmresearch.models.wise_ft import interpolate_weights
from mmresearch.utils.checkpoint import config_container, resolve_checkpoint_path
from mmresearch.utils.command_line import checked_command_line, command_line_keys
from mmresearch.utils.eval_config import eval_run_config
from mmresearch.utils.instantiate import build, build_dict
from mmresearch.utils.console import log_files, setup_console
from mmresearch.utils.results import format_paths, format_table, write_results

log = logging.getLogger("mmresearch.eval")


#: keys of the eval config that are not mmr-train's (left out of a baseline's train composition)
EVAL_ONLY = ("ckpt_path", "eval", "precision", "compile", "allow_unsafe_checkpoint", "task_name")


def baseline_model(cfg: DictConfig):
    """``(model, run config, tokenizer)`` of a model evaluated as it is built (no ``ckpt_path``):
    ``conf/train.yaml`` composed with this command line's overrides (those of mmr-train), so
    that ``model=clip model.pretrained=...`` builds what ``mmr-train`` would start from."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    parsed = OverridesParser.create().parse_overrides(lines)
    keep = [line for line, o in zip(lines, parsed) if o.key_or_group.lstrip("+~").split(".")[0] not in EVAL_ONLY]
    if GlobalHydra.instance().is_initialized():  # inside mmr-eval's Hydra app: the same config directory
        run_cfg = compose(config_name="train", overrides=keep)
    else:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            run_cfg = compose(config_name="train", overrides=keep)
    OmegaConf.set_struct(run_cfg, False)
    run_cfg.paths = cfg.paths
    tokenizer = build(run_cfg, "tokenizer")
    model = build_model(run_cfg, tokenizer, build(run_cfg, "data", tokenizer=tokenizer))
    model.run_config = config_container(run_cfg)
    return model.eval(), run_cfg, tokenizer


def wise_ft_table(model, run_cfg: DictConfig, tokenizer, datamodule, trainer: L.Trainer, alphas) -> List[Dict[str, Any]]:
    """WiSE-FT: the test metrics of ``(1 - alpha) * initial + alpha * fine-tuned`` weights for each
    alpha (:func:`mmresearch.models.wise_ft.interpolate_weights`); the initial weights are the
    run's model built again from its config (the pretrained checkpoint it started from)."""
    if getattr(model, "pretrained", None) is None:
        raise SystemExit(f"eval=wise_ft interpolates towards the pretrained checkpoint a run started from (model=clip); "
                         f"this run's model ({type(model).__name__}) has none")
    initial = build_model(run_cfg.copy(), tokenizer, datamodule, strict=False).state_dict()
    finetuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows = []
    for alpha in alphas:
        model.load_state_dict(interpolate_weights(initial, finetuned, float(alpha)))
        trainer.test(model, datamodule=datamodule, verbose=False)
        rows.append({"alpha": float(alpha), "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}})
    model.load_state_dict(finetuned)
    return rows


def format_wise_ft(rows: List[Dict[str, Any]]) -> str:
    """The WiSE-FT table: one row per alpha, retrieval R@1 both ways and rsum."""
    keys = [k for k in ("test/t2i_R@1", "test/i2t_R@1", "test/rsum") if all(k in r["metrics"] for r in rows)]
    lines = ["WiSE-FT (alpha 0: the pretrained checkpoint, 1: the fine-tuned run)", "| alpha | " + " | ".join(k[5:] for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {r['alpha']:g} | " + " | ".join(f"{r['metrics'][k]:.4f}" for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> Dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` (or, with none, the model of ``cfg.model`` as it is built);
    returns the test metrics."""
    started = time.time()
    out_dir = setup_run(cfg)
    if cfg.get("ckpt_path") is None:  # main() checked that model=<option> was given
        model, run_cfg, tokenizer = baseline_model(cfg)
        path = None
    else:
        path = resolve_checkpoint_path(cfg.ckpt_path)
        data_keys = command_line_keys("data")  # the run's preprocessing is kept unless these set it
        model, run_cfg, tokenizer = load_model(
            path, allow_unsafe=bool(cfg.allow_unsafe_checkpoint), configure=lambda stored: eval_run_config(stored, cfg, data_keys)
        )
    source = str(path.resolve()) if path is not None else f"{OmegaConf.select(run_cfg, 'model._target_')} ({OmegaConf.select(run_cfg, 'model.pretrained', default='as built')})"
    if not cfg.get("compile", False):  # the run's encoder compile settings are for training
        keep_eager(model)
    datamodule = build(run_cfg, "data", tokenizer=tokenizer)
    precision = cfg.get("precision") or OmegaConf.select(run_cfg, "trainer.precision") or cfg.trainer.precision
    trainer: L.Trainer = build(
        cfg, "trainer", callbacks=build_dict(cfg, "eval.callbacks"), logger=build_dict(cfg, "logger") or False, precision=precision
    )
    trainer.test(model, datamodule=datamodule, verbose=False)  # the one table is the final one below
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    wise_ft = None
    if (cfg.eval.get("wise_ft") or {}).get("enabled"):
        wise_ft = wise_ft_table(model, run_cfg, tokenizer, datamodule, trainer, list(cfg.eval.wise_ft.alphas))
    export = cfg.eval.get("export") or {}
    exported: Optional[str] = None
    if export.get("enabled") and trainer.is_global_zero:
        from mmresearch.evaluation.export import export_embeddings

        model.to(trainer.strategy.root_device)
        exported = str(export_embeddings(model, datamodule, export.dir, split=export.split, index=export.index, checkpoint=source))
        log.info("embeddings and FAISS index written to %s (search: mmr-search %s \"a red circle\")", exported, exported)
    if trainer.is_global_zero:
        result_path = write_results(
            out_dir,
            metrics,
            run_cfg,
            time.time() - started,
            extra={"checkpoint": str(path.resolve()) if path is not None else None, "model": source, "export_dir": exported,
                   "eval_config": config_container(cfg), **({"wise_ft": wise_ft} if wise_ft is not None else {})},
        )
        if wise_ft is not None:
            log.info("\n%s", format_wise_ft(wise_ft))
        log.info("\n%s", format_table(metrics, title=f"test metrics of {path.name if path is not None else source} ({result_path})"))
        log.info("%s", format_paths({"embeddings": exported, "log": log_files()}))
    return metrics


@checked_command_line("eval", run_config_keys=("data", "model"))  # data.*/model.*: keys of the evaluated run's config
@hydra.main(config_path=CONFIG_DIR, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    setup_console()
    chosen = OmegaConf.select(cfg, "model._target_") is not None  # model=<option> (model.<key>=... alone changes a checkpoint's)
    if cfg.get("ckpt_path") is None and not chosen:
        raise SystemExit("mmr-eval needs ckpt_path=<checkpoint file or run directory>, or model=<option> (a pretrained model "
                         "evaluated as it is, e.g. model=clip model.pretrained=<hub name or directory>)")
    if cfg.get("ckpt_path") is not None and chosen:
        raise SystemExit("mmr-eval: give ckpt_path (a trained model and its run config) or model=<option> (a model as it is "
                         "built), not both; model.<key>=... changes one key of the checkpoint's model")
    evaluate(cfg)


if __name__ == "__main__":
    main()
