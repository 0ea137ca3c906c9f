"""ALBEF-style model: objectives from config, momentum model and queue, text/fusion split, cached
retrieval scoring, configuration errors."""

import copy
from types import SimpleNamespace

import pytest
import torch

from mmresearch.models.builder import build_model
from mmresearch.modules.fusion_heads import ITMHead
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build

from helpers import FAST

TINY = ["experiment=albef_shapes", "model.queue_size=48", "model.embed_dim=32"]


def _model_and_batch(compose_cfg, overrides=()):
    cfg = compose_cfg([*FAST, *TINY, *overrides])
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    dm.setup("fit")
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer, dm)
    batch = next(iter(dm.train_dataloader()))
    return model, batch, dm


def test_every_objective_contributes_and_gradients_reach_every_part(compose_cfg):
    model, batch, _ = _model_and_batch(compose_cfg)
    model.train()
    terms = model(batch)
    assert {"itc", "itc_loss_i2t", "itc_loss_t2i", "itm", "itm_acc", "mlm", "mlm_acc", "loss"} <= set(terms)
    torch.testing.assert_close(terms["loss"], terms["itc"] + terms["itm"] + terms["mlm"])
    terms["loss"].backward()
    layer = model.fusion.layers[0]
    for name, p in [("cross-attention", layer.multihead_attn.in_proj_weight), ("fusion self-attention", layer.self_attn.in_proj_weight),
                    ("text encoder", model.text_encoder.model.get_input_embeddings().weight), ("image projection", model.image_proj.proj[-1].weight),
                    ("ITM head", model.itm_head.fc.weight), ("temperature", next(model.temperature.parameters()))]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert next(model.image_encoder.parameters()).grad.abs().sum() > 0
    assert all(p.grad is None for p in model.momentum.parameters())  # the momentum model is not trained
    assert all(not p.requires_grad for p in model.momentum.parameters())
    # the MLM decoder shares the word embeddings, in the online and in the momentum model
    assert model.mlm_head.decoder.weight is model.text_encoder.model.get_input_embeddings().weight
    assert model.momentum["mlm_head"].decoder.weight is model.momentum["text_encoder"].model.get_input_embeddings().weight


def test_training_forward_enqueues_momentum_features_with_image_ids(compose_cfg):
    model, batch, _ = _model_and_batch(compose_cfg)
    model.eval()
    with torch.no_grad():
        model(batch)
    assert int(model.queue.filled) == 0  # evaluation never touches the queue
    model.train()
    model(batch)
    _, texts, ids = model.queue.contents()
    assert ids.tolist() == batch.image_ids.tolist()
    with torch.no_grad():
        want = model.momentum["text_proj"](model.momentum["text_encoder"](batch.input_ids, batch.attention_mask).pooled)
    torch.testing.assert_close(texts, want.float())
    model(batch)  # 32 + 32 rows in a queue of 48: wraps around
    assert int(model.queue.filled) == 48 and int(model.queue.ptr) == 16


def test_the_text_encoder_is_split_into_text_and_fusion_layers(compose_cfg, monkeypatch):
    from mmresearch.modules.fusions import cross_attention

    removed, split = [], cross_attention.split_bert_layers

    def recording_split(model, keep):
        layers = split(model, keep)
        removed.extend(copy.deepcopy(layer) for layer in layers)  # before the fusion layers are loaded
        return layers

    monkeypatch.setattr(cross_attention, "split_bert_layers", recording_split)
    model, _, _ = _model_and_batch(compose_cfg, ["text_encoder.config.num_hidden_layers=3", "model.text_layers=1", "model.fusion_layers=3"])
    assert len(model.text_encoder.model.encoder.layer) == 1 and len(model.fusion.layers) == 3 and len(removed) == 2
    assert len(model.momentum["text_encoder"].model.encoder.layer) == 1  # the copy has the truncated layout
    # fusion layers 0 and 1 start from text layers 1 and 2 (self-attention and FFN); layer 2 is new
    for fused, source in zip(model.fusion.layers, removed):
        torch.testing.assert_close(fused.linear1.weight, source.intermediate.dense.weight)
        torch.testing.assert_close(fused.norm3.weight, source.output.LayerNorm.weight)
        q = source.attention.self.query.weight
        torch.testing.assert_close(fused.self_attn.in_proj_weight[: q.shape[0]], q)
    assert not torch.allclose(model.fusion.layers[2].linear1.weight, removed[1].intermediate.dense.weight)


def test_momentum_follows_after_an_optimizer_step(compose_cfg):
    model, batch, _ = _model_and_batch(compose_cfg, ["model.momentum=0.5"])
    model.train()
    before = model.momentum["text_proj"].proj[-1].weight.clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model(batch)["loss"].backward()
    optimizer.step()
    model.momentum.update(model._momentum_sources())
    online = model.text_proj.proj[-1].weight
    torch.testing.assert_close(model.momentum["text_proj"].proj[-1].weight, 0.5 * before + 0.5 * online)


def test_alpha_ramps_up_over_the_first_epoch(compose_cfg):
    model, _, _ = _model_and_batch(compose_cfg)
    for step, want in [(0, 0.0), (5, 0.2), (10, 0.4), (30, 0.4)]:
        model._trainer = SimpleNamespace(global_step=step, num_training_batches=10, accumulate_grad_batches=1)
        assert model.current_alpha() == pytest.approx(want)
    model.distill_cfg["warmup_steps"] = 20
    model._trainer = SimpleNamespace(global_step=5, num_training_batches=10, accumulate_grad_batches=1)
    assert model.current_alpha() == pytest.approx(0.1)
    model._trainer = None


def test_cached_pair_scorer_equals_scoring_each_pair_from_scratch(compose_cfg):
    model, _, dm = _model_and_batch(compose_cfg)
    model.eval()
    batch = next(iter(dm.test_dataloader()))
    from mmresearch.evaluation.pair_store import PairStore

    store = PairStore(max_length=64)
    store.update(batch.images, batch.image_ids, batch.input_ids, batch.attention_mask, batch.text_image_ids, batch.text_ids)
    pairs = store.compute()
    image_rows, text_rows = torch.tensor([0, 3, 5, 5]), torch.tensor([7, 0, 2, 11])
    with torch.no_grad():
        got = model.pair_scorer(pairs)(image_rows, text_rows)
        want = ITMHead.match_score(model.itm_logits(pairs.images[image_rows], pairs.input_ids[text_rows], pairs.attention_mask[text_rows]))
        assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_vqa_fine_tuning_builds_no_momentum_model(compose_cfg):
    model, batch, _ = _model_and_batch(compose_cfg, ["model.objectives.itc.weight=0", "~loss", "~temperature", "model.objectives.itm.weight=0", "model.objectives.mlm.weight=0",
                                                      "model.objectives.vqa.weight=1", "data.train_questions=true"])
    assert model.momentum is None and model.queue is None
    assert not any(p.requires_grad for p in model.image_proj.parameters())  # not trained by VQA
    terms = model(batch)
    assert set(terms) == {"vqa", "loss"} and torch.isfinite(terms["loss"])


def test_ddp_skips_only_the_queue_buffers(compose_cfg):
    model, _, _ = _model_and_batch(compose_cfg)
    assert set(model._ddp_params_and_buffers_to_ignore) == {f"queue.{n}" for n, _ in model.queue.named_buffers()}


def test_itc_alone_freezes_the_fusion_and_no_itc_means_no_embeddings(compose_cfg):
    model, _, _ = _model_and_batch(compose_cfg, ["model.objectives.itm.weight=0", "model.objectives.mlm.weight=0"])
    assert not any(p.requires_grad for p in model.fusion.parameters()) and not any(p.requires_grad for p in model.itm_head.parameters())
    assert model.has_embeddings
    model, _, _ = _model_and_batch(compose_cfg, ["model.objectives.itc.weight=0", "~loss", "~temperature", "model.objectives.itm.negatives=random"])
    assert not model.has_embeddings and model.momentum is not None  # MLM distillation keeps a momentum model


def test_init_from_skips_the_queue_and_restarts_the_momentum_model_from_the_loaded_weights(compose_cfg, tmp_path):
    source, batch, _ = _model_and_batch(compose_cfg)
    source.train()
    source(batch)  # fills the queue
    with torch.no_grad():
        for p in source.text_proj.parameters():
            p.add_(1.0)
    without_momentum = {k: v for k, v in source.state_dict().items() if not k.startswith("momentum.")}
    torch.save({"state_dict": without_momentum}, tmp_path / "online.ckpt")
    model, _, _ = _model_and_batch(compose_cfg, [f"model.init_from={tmp_path / 'online.ckpt'}"])
    assert int(model.queue.filled) == 0
    torch.testing.assert_close(model.text_proj.proj[-1].weight, source.text_proj.proj[-1].weight)
    torch.testing.assert_close(model.momentum["text_proj"].proj[-1].weight, source.text_proj.proj[-1].weight)


def test_config_errors_name_the_key(compose_cfg):
    with pytest.raises(ConfigError, match="model.objectives.itm.negatives=hard"):
        _model_and_batch(compose_cfg, ["model.objectives.itc.weight=0", "~loss", "~temperature"])
    with pytest.raises(ConfigError, match="model.distill.alpha"):
        _model_and_batch(compose_cfg, ["model.distill.alpha=1.5"])
    with pytest.raises(ConfigError, match="model.objectives"):
        _model_and_batch(compose_cfg, ["model.objectives.itc.weight=0", "~loss", "~temperature", "model.objectives.itm.weight=0", "model.objectives.mlm.weight=0"])
    with pytest.raises(ConfigError, match="model.text_layers"):
        _model_and_batch(compose_cfg, ["model.text_layers=9"])


def test_without_a_queue_the_negatives_are_the_batch(compose_cfg):
    model, batch, _ = _model_and_batch(compose_cfg, ["model.queue_size=0", "model.distill.alpha=0"])
    assert model.queue is None and model.momentum is not None
    model.train()
    terms = model(batch)
    with torch.no_grad():  # momentum = online at the start: InfoNCE with image ids over the batch
        from mmresearch.modules.losses.infonce import infonce_loss

        img, txt = model.embed_images(batch.images), model.embed_texts(batch.input_ids, batch.attention_mask)
        want = infonce_loss(img, txt, model.temperature(), batch.image_ids, batch.image_ids)["loss"]
    torch.testing.assert_close(terms["itc"], want, atol=1e-5, rtol=1e-5)
