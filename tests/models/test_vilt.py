"""ViLT-style model: objectives from config, gradients reach the joint stack, evaluation keys."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mmresearch.modules.objectives import itm as itm_objective
from mmresearch.models.builder import build_model
from mmresearch.modules.objectives.itm_negatives import negative_weights
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build

from helpers import FAST

TINY = [
    "experiment=vilt_shapes",
    "image_encoder.model_kwargs.embed_dim=32",
    "image_encoder.model_kwargs.depth=2",
    "image_encoder.model_kwargs.num_heads=2",
    "text_encoder.config.hidden_size=32",
]


def _model_and_batch(compose_cfg, overrides=()):
    cfg = compose_cfg([*FAST, *TINY, *overrides])
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    dm.setup("fit")
    model = build_model(cfg, tokenizer, dm)
    batch = next(iter(dm.train_dataloader()))
    return model, batch, dm


def test_every_objective_contributes_and_trains_the_stack(compose_cfg):
    model, batch, _ = _model_and_batch(compose_cfg)
    torch.manual_seed(0)
    terms = model(batch)
    assert {"itm", "itm_acc", "mlm", "mlm_acc", "itc", "loss"} <= set(terms)
    expected = terms["itm"] + terms["mlm"] + terms["itc"]
    assert torch.allclose(terms["loss"], expected)
    terms["loss"].backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.encoder.modality_type.weight.grad.abs().sum() > 0
    assert model.encoder.word_embeddings.weight.grad.abs().sum() > 0
    # the MLM decoder shares the word-embedding table (same width)
    assert model.mlm_head.decoder.weight is model.encoder.word_embeddings.weight


def test_pure_vilt_builds_no_contrastive_parts(compose_cfg):
    model, batch, _ = _model_and_batch(compose_cfg, ["model.objectives.itc.weight=0", "~loss", "~temperature", "model.objectives.itm.negatives=random"])
    assert "itc" not in model.objectives and model.temperature is None and not model.has_embeddings
    assert "itc" not in model(batch)


def test_vqa_objective_needs_questions_and_scores(compose_cfg):
    model, batch, _ = _model_and_batch(compose_cfg, ["model.objectives.itm.weight=0", "model.objectives.mlm.weight=0", "model.objectives.itc.weight=0", "~loss", "~temperature",
                                                     "model.objectives.itm.negatives=random", "model.objectives.vqa.weight=1", "data.train_questions=true"])
    terms = model(batch)
    assert set(terms) == {"vqa", "loss"} and torch.isfinite(terms["loss"])
    assert model.vqa_head.net[-1].out_features == 20  # the built-in answer vocabulary


def test_config_errors_name_the_key(compose_cfg):
    with pytest.raises(ConfigError, match="model.objectives.itm.negatives=hard"):
        _model_and_batch(compose_cfg, ["model.objectives.itc.weight=0", "~loss", "~temperature", "model.objectives.itm.negatives=hard"])
    with pytest.raises(ConfigError, match="model.objectives"):
        _model_and_batch(compose_cfg, ["model.objectives.itm.weight=0", "model.objectives.mlm.weight=0", "model.objectives.itc.weight=0", "~loss", "~temperature", "model.objectives.itm.negatives=random"])
    with pytest.raises(ConfigError, match="text_encoder.compile=true has no effect in model=vilt"):
        _model_and_batch(compose_cfg, ["text_encoder.compile=true"])


@pytest.mark.parametrize("replace", ["image", "text"])
def test_hard_negatives_are_drawn_from_the_tempered_itc_softmax(compose_cfg, monkeypatch, replace):
    """Hard ITM negatives: softmax(similarity / tau) over the other images, as ALBEF (without
    1 / tau, cosines in [-1, 1] make the draw nearly uniform)."""
    tau = 0.05
    model, batch, _ = _model_and_batch(compose_cfg, ["model.objectives.itm.negatives=hard", f"model.objectives.itm.replace={replace}",
                                                     "model.objectives.mlm.weight=0", "temperature=fixed", f"temperature.tau={tau}"])
    ids = torch.tensor([0, 0, 1, 2, 3, 4, 5, 6])  # rows 0 and 1: two captions of one image
    batch = dataclasses.replace(batch.first_pairs(8), image_ids=ids, text_image_ids=ids)
    g = torch.Generator().manual_seed(0)
    image_emb, text_emb = (F.normalize(torch.randn(8, 16, generator=g), dim=1) for _ in range(2))
    monkeypatch.setattr(model, "embed_images", lambda images: image_emb)
    monkeypatch.setattr(model, "embed_texts", lambda input_ids, attention_mask: text_emb)
    sample, drawn_from = itm_objective.sample_negative_partners, []

    def recording(image_ids, similarity=None, generator=None, column_ids=None):
        drawn_from.append(negative_weights(image_ids, similarity, column_ids))  # the probabilities of the draw
        return sample(image_ids, similarity, generator, column_ids)

    monkeypatch.setattr(itm_objective, "sample_negative_partners", recording)
    model(batch)
    cosine = text_emb @ image_emb.T if replace == "image" else image_emb @ text_emb.T  # a partner image per text, or text per image
    expected = torch.softmax((cosine / tau).masked_fill(ids[:, None] == ids[None, :], float("-inf")), dim=1)
    assert len(drawn_from) == 1
    torch.testing.assert_close(drawn_from[0], expected)
