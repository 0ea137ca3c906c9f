"""Locking a tower except its last blocks (open_clip's --lock-image-unlocked-groups), on the
encoders the towers use: a transformers CLIP vision tower, a timm ViT, a BERT; and from config."""

import lightning as L
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel

from mmresearch import CONFIG_DIR
from mmresearch.models.builder import build_model
from mmresearch.modules.lock import find_blocks, lock_encoder
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build

from helpers import FAST


def _trainable(module):
    return {n for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("make, blocks, after", [
    (lambda: CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                              num_attention_heads=2)), "encoder.layers", "post_layernorm"),
    (lambda: timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, num_classes=0), "blocks", "norm"),
    (lambda: BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)),
     "encoder.layer", "pooler"),
])
def test_only_the_last_blocks_and_what_follows_them_train(make, blocks, after):
    encoder = make()
    assert find_blocks(encoder)[0] == blocks and len(find_blocks(encoder)[1]) == 3
    lock_encoder(encoder, 1)
    trainable = _trainable(encoder)
    assert trainable and all(n.startswith((f"{blocks}.2.", after)) for n in trainable)
    assert any(n.startswith(after) for n in trainable)
    lock_encoder(encoder, 0)
    assert not _trainable(encoder)
    lock_encoder(encoder, 0, unlock_norms=True)
    assert _trainable(encoder) and all("norm" in n.lower() or n.endswith("bias") for n in _trainable(encoder))
    lock_encoder(encoder, 3)  # every block: only what comes before them (embeddings) stays locked
    assert {n for n, _ in encoder.named_parameters() if n.startswith(blocks)} <= _trainable(encoder)
    assert len(_trainable(encoder)) < len(list(encoder.parameters()))


def test_bad_values_name_the_key():
    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ConfigError, match=r"model\.towers\.text\.lock\.unlocked_blocks=5 but BertModel has 2 blocks"):
        lock_encoder(encoder, 5, key="model.towers.text.lock")
    with pytest.raises(ConfigError, match="unlocked_blocks must be null or an int >= 0"):
        lock_encoder(encoder, -1)


def test_from_config_a_locked_tower_does_not_move():
    overrides = [*FAST, "data.train_size=64", "data.batch_size=16", "image_encoder=vit_tiny", "model.towers.image.lock.unlocked_blocks=1",
                 "model.towers.text.lock.unlocked_blocks=0"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    model = build_model(cfg, tokenizer, dm)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=dm)
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert not any(n.startswith("towers.text.encoder") for n in moved)  # locked whole
    assert any(n.startswith("towers.text.head") for n in moved)  # the head is not part of the lock
    image = [n for n in moved if n.startswith("towers.image.encoder")]
    assert image and all(".blocks.0." not in n and "patch_embed" not in n for n in image)


def test_layer_wise_lr_decay_scales_by_depth_from_the_top():
    from mmresearch.modules.lock import layer_lr_scales

    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32))
    scales = {n: layer_lr_scales(encoder, 0.5)[p] for n, p in encoder.named_parameters()}
    assert scales["embeddings.word_embeddings.weight"] == 0.125  # below every block: decay ** 3
    assert scales["encoder.layer.0.output.dense.weight"] == 0.25 and scales["encoder.layer.2.output.dense.weight"] == 1.0
    assert scales["pooler.dense.weight"] == 1.0  # after the blocks: as the top block
    with pytest.raises(ConfigError, match=r"lr_decay must be in \(0, 1\]"):
        layer_lr_scales(encoder, 1.5)


def test_from_config_the_optimizer_gets_the_decayed_rates():
    overrides = [*FAST, "image_encoder=vit_tiny", "model.towers.image.lr_decay=0.5", "optimizer.lr=0.01"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    model = build_model(cfg, build(cfg, "tokenizer"))
    lr_of = {id(p): g["lr"] for g in model.make_optimizer().param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = len(find_blocks(model.towers["image"].encoder)[1])
    assert lr_of[id(named["towers.image.encoder.model.blocks.0.mlp.fc1.weight"])] == pytest.approx(0.01 * 0.5 ** (depth - 1))
    assert lr_of[id(named[f"towers.image.encoder.model.blocks.{depth - 1}.mlp.fc1.weight"])] == pytest.approx(0.01)
    assert lr_of[id(named["towers.image.head.proj.1.weight"])] == pytest.approx(0.01)
    assert all(lr == pytest.approx(0.01) for n, p in named.items() if n.startswith("towers.text") for lr in [lr_of[id(p)]])
