"""``model=clip``: a transformers dual-tower checkpoint (CLIP, SigLIP) as the dual encoder's towers
gives the reference model's own embeddings and logits, and its tokenizer's token ids; it trains.

Offline: tiny random checkpoints saved to disk in the reference format (``save_pretrained``, with
a CLIP BPE tokenizer), compared with ``transformers.AutoModel.from_pretrained`` of the same files."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from transformers import AutoModel, AutoTokenizer

from mmresearch import CONFIG_DIR
from mmresearch.models.builder import build_model
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build

from helpers import FAST
from pretrained_fixtures import bert_checkpoint, captions, paired_checkpoint, random_images

LOSS = {"clip": ["loss=infonce", "temperature=learnable"], "siglip": ["loss=siglip", "temperature=siglip"]}


@pytest.fixture(scope="module", params=["clip", "siglip"])
def checkpoint(request, tmp_path_factory):
    return request.param, paired_checkpoint(tmp_path_factory.mktemp(request.param), request.param)


def _cfg(kind, path, extra=()):
    overrides = [*FAST, "model=clip", f"model.pretrained={path}", *LOSS[kind], "tokenizer.min_vocab_size=100", "data.image_size=32", *extra]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _ours_and_reference(kind, path):
    cfg = _cfg(kind, path)
    tokenizer = build(cfg, "tokenizer")
    model = build_model(cfg, tokenizer).eval()
    return model, AutoModel.from_pretrained(str(path)).eval(), tokenizer, cfg


def test_embeddings_and_logits_equal_the_reference_model(checkpoint):
    kind, path = checkpoint
    model, reference, tokenizer, _ = _ours_and_reference(kind, path)
    images, texts = random_images(5), captions(7)
    tokens = tokenizer(texts, padding="longest", return_tensors="pt")
    with torch.no_grad():
        image_emb = model.embed_images(images)
        text_emb = model.embed_texts(tokens.input_ids, tokens.attention_mask)
        ref_image = reference.get_image_features(pixel_values=images).pooler_output
        ref_text = reference.get_text_features(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).pooler_output
        ref = reference(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=images)
        objective = model.objectives["image_text"]
        logits = objective.temperature() * image_emb @ text_emb.T
        if kind == "siglip":
            logits = logits + objective.loss.logit_bias
    torch.testing.assert_close(image_emb, F.normalize(ref_image, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(text_emb, F.normalize(ref_text, dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, ref.logits_per_image, atol=1e-5, rtol=0)


def test_the_clip_loss_equals_the_reference_loss(checkpoint):
    kind, path = checkpoint
    if kind != "clip":
        pytest.skip("CLIPModel(return_loss=True) is CLIP's symmetric cross-entropy")
    model, reference, tokenizer, _ = _ours_and_reference(kind, path)
    images, texts = random_images(6, seed=1), captions(6, seed=1)
    tokens = tokenizer(texts, padding="longest", return_tensors="pt")
    ids = torch.arange(6)
    with torch.no_grad():
        ours = model.objectives["image_text"].loss(model.embed_images(images), model.embed_texts(tokens.input_ids, tokens.attention_mask),
                                                    model.objectives["image_text"].temperature(), ids, ids)["loss"]
        want = reference(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=images, return_loss=True).loss
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=0)


def test_token_ids_are_the_checkpoints_tokenizers(checkpoint):
    kind, path = checkpoint
    _, _, tokenizer, _ = _ours_and_reference(kind, path)
    texts = captions(9, seed=2)
    assert tokenizer(texts).input_ids == AutoTokenizer.from_pretrained(str(path))(texts).input_ids


def test_it_trains_a_few_steps_with_the_existing_losses(checkpoint):
    kind, path = checkpoint
    cfg = _cfg(kind, path, ["data.train_size=64", "data.batch_size=16"])
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    model = build_model(cfg, tokenizer, dm)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    moved = {n.split(".")[1] for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert {"image", "text"} <= moved


def test_a_checkpoint_that_is_not_a_dual_tower_model_is_refused(tmp_path, checkpoint):
    kind, path = checkpoint
    bert = bert_checkpoint(tmp_path / "bert")
    cfg = _cfg(kind, path, [f"model.pretrained={bert}", f"tokenizer.name_or_path={path}"])
    with pytest.raises(ConfigError, match=r"model\.pretrained=.*bert' is a BertModel, not a dual-tower"):
        build_model(cfg, build(cfg, "tokenizer"))


def test_siglip_needs_the_siglip_loss(tmp_path):
    path = paired_checkpoint(tmp_path / "siglip", "siglip")
    cfg = _cfg("clip", path)
    with pytest.raises(ConfigError, match="SigLIP-style checkpoint .* train it with loss=siglip"):
        build_model(cfg, build(cfg, "tokenizer"))


def test_a_tokenizer_larger_than_the_text_tower_is_refused(checkpoint):
    kind, path = checkpoint
    class AnotherTokenizer:  # e.g. bert-base-uncased's 30,522 tokens for a tower of 312 rows
        name_or_path = "bert-base-uncased"

        def __len__(self):
            return 30522

    cfg = _cfg(kind, path)
    with pytest.raises(ConfigError, match=r"the tokenizer \(bert-base-uncased\) has 30522 tokens but the text tower of model\.pretrained=.* has 312 embedding rows"):
        build_model(cfg, AnotherTokenizer())


def test_the_towers_start_in_training_mode(checkpoint):
    """``from_pretrained`` returns a model in eval mode; a tower must not train with its dropout off."""
    kind, path = checkpoint
    cfg = _cfg(kind, path)
    model = build_model(cfg, build(cfg, "tokenizer"))
    assert all(m.training for m in model.towers.modules())
