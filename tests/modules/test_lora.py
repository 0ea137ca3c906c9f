"""LoRA through peft on a tower (``model.towers.<m>.lora``): the model starts equal to the one
without adapters, only the adapters (and the head) train, a target that matches nothing is one
line naming the key, and export merges the adapters into the weights transformers loads."""

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModel

from mmresearch import CONFIG_DIR
from mmresearch.models.builder import build_model
from mmresearch.utils.errors import ConfigError
from mmresearch.utils.instantiate import build

from helpers import FAST
from pretrained_fixtures import paired_checkpoint, random_images

LORA = "model.towers.image.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return paired_checkpoint(tmp_path_factory.mktemp("clip"), "clip")


def _model(checkpoint, extra=()):
    overrides = [*FAST, "data.train_size=64", "data.batch_size=16", "model=clip", f"model.pretrained={checkpoint}", "loss=infonce",
                 "tokenizer.min_vocab_size=100", "data.image_size=32", *extra]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    tokenizer = build(cfg, "tokenizer")
    dm = build(cfg, "data", tokenizer=tokenizer)
    return build_model(cfg, tokenizer, dm), dm, tokenizer


def test_adapters_start_at_zero_and_only_they_train(checkpoint):
    plain, _, _ = _model(checkpoint)
    model, dm, _ = _model(checkpoint, [LORA])
    images = random_images(3)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().embed_images(images), plain.eval().embed_images(images), atol=1e-6, rtol=0)
    encoder = model.towers["image"].encoder
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=0, limit_val_batches=0).fit(model.train(), datamodule=dm)
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    image = {n for n in moved if n.startswith("towers.image.encoder")}
    assert image and all("lora_B" in n or "lora_A" in n for n in image)
    assert any(n.startswith("towers.text.encoder") for n in moved)  # the text tower trains in full


def test_a_target_that_matches_nothing_names_the_key(checkpoint):
    with pytest.raises(ConfigError, match=r"model\.towers\.image\.lora\.target_modules=\['attn_qkv'\] matches no module"):
        _model(checkpoint, [LORA.replace("[q_proj, v_proj]", "[attn_qkv]")])


def test_export_merges_the_adapters(checkpoint, tmp_path):
    model, _, _ = _model(checkpoint, [LORA])
    with torch.no_grad():  # a trained-looking adapter
        for name, p in model.towers["image"].encoder.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.eval()
    model.to_transformers().save_pretrained(str(tmp_path))
    reference, info = AutoModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not any(info.values()), info
    images = random_images(3, seed=4)
    with torch.no_grad():
        ours = model.embed_images(images)
        ref = reference.eval().get_image_features(pixel_values=images).pooler_output
        plain = AutoModel.from_pretrained(str(checkpoint)).eval().get_image_features(pixel_values=images).pooler_output
    torch.testing.assert_close(ours, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5, rtol=0)
    assert not torch.allclose(torch.nn.functional.normalize(plain, dim=-1), ours, atol=1e-3)  # the adapter changed the tower
    # a checkpoint of it rebuilds: the config adds the same adapters, every key has its place
    rebuilt, _, _ = _model(checkpoint, [LORA])
    rebuilt.load_state_dict(model.state_dict(), strict=True)
