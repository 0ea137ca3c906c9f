"""What the fused families share (``fused_base``): the evaluation of a run that does not train the
ITM head, and ``model.init_from`` refusing checkpoints that fill too little of the model."""

import logging

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from mmresearch.models.builder import build_model
from mmresearch.models.fused_base import ITM_EVAL_SEED
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build

from helpers import FAST

TINY = {
    "vilt": ["experiment=vilt_shapes", "image_encoder.model_kwargs.embed_dim=32", "image_encoder.model_kwargs.depth=2",
             "image_encoder.model_kwargs.num_heads=2", "text_encoder.config.hidden_size=32", "model.embed_dim=16"],
    "albef": ["experiment=albef_shapes", "model.queue_size=48", "model.embed_dim=32"],
}
SMALL_TEST = ["data.test_size=24", "data.eval_batch_size=8", "model.retrieval.top_k=8"]


def _model(compose_cfg, family, overrides=()):
    cfg = compose_cfg([*FAST, *TINY[family], *SMALL_TEST, *overrides])
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    torch.manual_seed(0)
    return build_model(cfg, tokenizer, dm), dm


def _test_metrics(model, dm) -> dict:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.test(model, datamodule=dm, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def _perfect_first_stage(pairs):
    """``[N_t, N_i]``: 1 for each caption's own image, 0 elsewhere (R@1 = 1 both ways)."""
    return F.one_hot(pairs.text_to_image, pairs.images.shape[0]).float().cpu()


@pytest.mark.parametrize("family", list(TINY))
def test_without_itm_retrieval_is_the_first_stage_and_no_itm_metric_is_logged(compose_cfg, family):
    """An ITM head this run does not train would rerank at random (R@1 about 1 / top_k)."""
    model, dm = _model(compose_cfg, family, ["model.objectives.itm.weight=0", "model.objectives.itm.negatives=random"])
    assert model.has_embeddings and not model.trains_itm
    model._first_stage_scores = _perfect_first_stage
    metrics = _test_metrics(model, dm)
    for key in ("test/t2i_R@1", "test/i2t_R@1", "test/rsum"):
        assert metrics[key] == pytest.approx(1.0 if "R@" in key else 6.0), key
    assert not any(k in metrics for k in ("test/itm_acc", "test/pairs_scored", "test/comp_acc"))
    assert not any(k.startswith("test/first_stage/") for k in metrics)


def test_without_itm_and_first_stage_no_retrieval_is_reported_and_the_log_says_so_once(compose_cfg, caplog):
    model, dm = _model(compose_cfg, "vilt", ["model.objectives.itm.weight=0", "model.objectives.itc.weight=0", "~loss", "~temperature", "model.objectives.itm.negatives=random"])
    assert not model.has_embeddings
    with caplog.at_level(logging.WARNING, logger="mmresearch.models.fused_base"):
        first, second = _test_metrics(model, dm), _test_metrics(model, dm)
    assert not any("R@" in k or "rsum" in k or "itm_acc" in k for k in {**first, **second})
    said = [r for r in caplog.records if "no retrieval is reported" in r.getMessage()]
    assert len(said) == 1 and "model.objectives.itm.weight=0" in said[0].getMessage()
    assert model.test_pairs.update_count == 0  # the split's images were not collected for nothing


def test_itm_accuracy_is_the_balanced_accuracy_of_each_caption_with_its_image_and_a_seeded_other(compose_cfg):
    """Reference: every caption with its own image and with the image a generator seeded with
    ``ITM_EVAL_SEED`` draws uniformly among the others, scored one pair at a time; the same
    value in every evaluation (the global RNG plays no part)."""
    model, dm = _model(compose_cfg, "vilt")
    model.eval()
    dm.setup("test")
    batches = list(dm.test_dataloader())
    images = torch.cat([b.images for b in batches])
    image_ids = torch.cat([b.image_ids for b in batches])
    captions = [(b.input_ids[t : t + 1], b.attention_mask[t : t + 1], int(b.text_image_ids[t])) for b in batches for t in range(b.num_texts)]
    own = torch.tensor([int(torch.nonzero(image_ids == i)) for *_, i in captions])
    other = torch.randint(0, len(images) - 1, (len(captions),), generator=torch.Generator().manual_seed(ITM_EVAL_SEED))
    other = other + (other >= own).long()

    def scores(rows):
        out = []
        for row, (ids, mask, _) in zip(rows.tolist(), captions):
            width = int(mask.sum())
            out.append(model.itm_head.score(model.fused_pooled(images[row : row + 1], ids[:, :width], mask[:, :width])))
        return torch.cat(out)

    with torch.no_grad():
        matched, unmatched = scores(own), scores(other)
        ranked = torch.cat([matched, unmatched]).sort().values
        k = int(0.3 * len(ranked))
        shift = float(ranked[k - 1 : k + 1].mean())  # halfway between two scores, at the 30% quantile
        model.itm_head.fc.bias[1] -= shift  # scores on both sides of 0 (an untrained head scores alike)
    matched, unmatched = matched - shift > 0, unmatched - shift <= 0
    assert 0 < matched.sum() < len(matched) and 0 < unmatched.sum() < len(unmatched)  # the check can tell pairs apart
    want = 0.5 * (matched.float().mean() + unmatched.float().mean())
    values = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        values.append(_test_metrics(model, dm)["test/itm_acc"])
    assert values[0] == values[1] == pytest.approx(float(want), abs=1e-6)


def _save_state(model, path):
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def test_init_from_a_run_of_another_family_is_refused_unless_the_share_is_lowered(compose_cfg, tmp_path):
    vilt, _ = _model(compose_cfg, "vilt")
    path = _save_state(vilt, tmp_path / "vilt.ckpt")
    with pytest.raises(ConfigError) as refused:
        _model(compose_cfg, "albef", [f"model.init_from={path}"])
    message = str(refused.value)
    assert f"model.init_from={path}" in message and "model.init_from_min_share=0.5" in message
    assert "fills 0.01% of this model's parameters" in message and "itm_head (2 of 258 elements)" in message  # the ITM bias matches, not its weight
    assert "not loaded: image_encoder (" in message and "fusion (" in message
    albef, _ = _model(compose_cfg, "albef", [f"model.init_from={path}", "model.init_from_min_share=0"])
    torch.testing.assert_close(albef.itm_head.fc.bias, vilt.itm_head.fc.bias)


def test_init_from_a_run_of_the_same_family_loads_and_logs_what_it_loaded(compose_cfg, tmp_path, caplog):
    source, _ = _model(compose_cfg, "vilt")
    with torch.no_grad():
        source.encoder.blocks[0].attn.qkv.weight.add_(1.0)
    path = _save_state(source, tmp_path / "pretrain.ckpt")
    vqa = ["model.objectives.itm.weight=0", "model.objectives.mlm.weight=0", "model.objectives.itc.weight=0", "~loss", "~temperature", "model.objectives.vqa.weight=1",
           "model.objectives.itm.negatives=random", "model.retrieval.enabled=false", f"model.init_from={path}"]
    with caplog.at_level(logging.INFO, logger="mmresearch.models.fused_base"):
        model, _ = _model(compose_cfg, "vilt", vqa)
    torch.testing.assert_close(model.encoder.blocks[0].attn.qkv.weight, source.encoder.blocks[0].attn.qkv.weight)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "loaded: encoder (" in said and "not loaded: vqa_head (" in said
    with pytest.raises(ConfigError, match="model.init_from_min_share must be a share in"):
        _model(compose_cfg, "vilt", [*vqa, "model.init_from_min_share=1.5"])


def test_a_checkpoint_of_an_init_from_run_loads_without_reading_the_init_file_again(compose_cfg, tmp_path):
    """``load_model`` (mmr-eval, first stages) takes every weight from the checkpoint: the run's
    ``model.init_from`` file may be gone, and its share check is about the run's start."""
    from mmresearch.models.loading import load_model
    from mmresearch.utils.checkpoint import CONFIG_KEY, config_container

    source, _ = _model(compose_cfg, "vilt")
    init = _save_state(source, tmp_path / "pretrain.ckpt")
    vqa = ["model.objectives.itm.weight=0", "model.objectives.mlm.weight=0", "model.objectives.itc.weight=0", "~loss", "~temperature", "model.objectives.vqa.weight=1",
           "model.objectives.itm.negatives=random", "model.retrieval.enabled=false", f"model.init_from={init}"]
    cfg = compose_cfg([*FAST, *TINY["vilt"], *SMALL_TEST, *vqa])
    tokenizer = build(cfg, "tokenizer")
    model = build_model(cfg, tokenizer, build(cfg, "data", tokenizer=tokenizer))
    with torch.no_grad():
        model.vqa_head.net[0].weight.add_(1.0)  # a fine-tuned weight that only the checkpoint has
    run = tmp_path / "finetuned.ckpt"
    torch.save({"state_dict": model.state_dict(), CONFIG_KEY: config_container(cfg)}, run)
    init.unlink()
    loaded, run_cfg, _ = load_model(run)
    torch.testing.assert_close(loaded.vqa_head.net[0].weight, model.vqa_head.net[0].weight)
    assert run_cfg.model.init_from == str(init)  # the run's provenance is kept in its config
    assert loaded.run_config["model"]["init_from"] == str(init)
