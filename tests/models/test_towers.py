"""Modality towers: a third modality is a tower and a pair in the config, with no model change.

A toy "audio" modality (a waveform field on a batch subclass, a linear encoder) joins image and
text: the model, its towers and its two pairs are built from a config by Hydra alone."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor, nn

from mmresearch.data.batch import ImageTextBatch
from mmresearch.modules.encoders.outputs import EncoderOutput
from mmresearch.modules.losses.infonce import infonce_loss


@dataclasses.dataclass
class ImageTextAudioBatch(ImageTextBatch):
    """The built-in batch plus one waveform per image: ``audio [B, S]``."""

    audio: Optional[Tensor] = None
    MODALITIES = {**ImageTextBatch.MODALITIES, "audio": (("audio",), "image_ids")}


class ToyAudioEncoder(nn.Module):
    """``[B, S]`` waveform -> ``EncoderOutput(pooled [B, 16])``."""

    output_dim = 16

    def __init__(self, samples: int) -> None:
        super().__init__()
        self.net = nn.Linear(samples, self.output_dim)

    def forward(self, wave: Tensor) -> EncoderOutput:
        return EncoderOutput(pooled=self.net(wave))


def _head(out_dim=8):
    return {"_target_": "mmresearch.modules.heads.ProjectionHead", "_partial_": True, "out_dim": out_dim}


CONFIG = {
    "_target_": "mmresearch.models.dual_encoder.DualEncoder",
    "towers": {
        "image": {"encoder": {"_target_": "mmresearch.modules.encoders.image.TimmImageEncoder", "name": "resnet10t", "img_size": 32,
                              "pool": "flatten", "model_kwargs": {"channels": [8, 8, 16, 16], "stem_width": 8}}, "head": _head()},
        "text": {"encoder": {"_target_": "mmresearch.modules.encoders.text.HFTextEncoder", "vocab_size": 50,
                             "config": {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                        "intermediate_size": 32, "max_position_embeddings": 16}}, "head": _head()},
        # the third tower: a config entry
        "audio": {"encoder": {"_target_": f"{__name__}.ToyAudioEncoder", "samples": 64}, "head": _head()},
    },
    "objectives": {
        "image_text": {"_target_": "mmresearch.modules.objectives.ContrastiveObjective", "weight": 1.0, "modalities": ["image", "text"],
                       "loss": {"_target_": "mmresearch.modules.losses.InfoNCELoss"},
                       "temperature": {"_target_": "mmresearch.modules.temperature.LearnableTemperature", "init_tau": 0.07}},
        # and its pair, with its own loss weight and temperature (ImageBind aligns each modality with one anchor)
        "audio_text": {"_target_": "mmresearch.modules.objectives.ContrastiveObjective", "weight": 0.5, "modalities": ["audio", "text"],
                       "loss": {"_target_": "mmresearch.modules.losses.InfoNCELoss"},
                       "temperature": {"_target_": "mmresearch.modules.temperature.FixedTemperature", "tau": 0.1}},
    },
}


def _batch(b=6):
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(b)
    return ImageTextAudioBatch(images=torch.randn(b, 3, 32, 32, generator=g), image_ids=ids, input_ids=torch.randint(5, 50, (b, 7), generator=g),
                               attention_mask=torch.ones(b, 7, dtype=torch.long), text_image_ids=ids, audio=torch.randn(b, 64, generator=g))


def test_a_third_tower_and_pair_come_from_config_alone():
    torch.manual_seed(0)
    model = instantiate(OmegaConf.create(CONFIG), optimizer=torch.optim.AdamW)
    assert model.modalities == ("image", "text", "audio") and list(model.objectives) == ["image_text", "audio_text"]
    model.eval()  # no dropout: the terms are recomputed below
    batch = _batch()
    terms = model(batch)
    emb = {m: model.embed(m, *batch.inputs(m)) for m in model.modalities}
    ids = batch.image_ids
    want_it = infonce_loss(emb["image"], emb["text"], model.objectives["image_text"].temperature(), ids, ids)["loss"]
    want_at = infonce_loss(emb["audio"], emb["text"], torch.tensor(10.0), ids, ids)["loss"]
    torch.testing.assert_close(terms["image_text"], want_it)
    torch.testing.assert_close(terms["audio_text"], want_at)
    assert torch.equal(terms["loss"], 0 + 1.0 * terms["image_text"] + 0.5 * terms["audio_text"])
    terms["loss"].backward()
    assert model.towers["audio"].encoder.net.weight.grad.abs().sum() > 0
    # two temperatures: each logged under its pair's name; no single `model.temperature`
    assert set(model.temperatures()) == {"image_text", "audio_text"} and model.temperature is None


def test_the_image_text_model_equals_the_clip_case_built_in_python():
    """``DualEncoder.image_text`` (Python) and the config's towers + pair build the same model."""
    from mmresearch.models.dual_encoder import DualEncoder

    two = {**CONFIG, "towers": {k: v for k, v in CONFIG["towers"].items() if k != "audio"},
           "objectives": {"image_text": CONFIG["objectives"]["image_text"]}}
    torch.manual_seed(0)
    from_config = instantiate(OmegaConf.create(two), optimizer=torch.optim.AdamW)
    torch.manual_seed(0)
    image_encoder = instantiate(OmegaConf.create(two["towers"]["image"]["encoder"]))
    from functools import partial

    from mmresearch.modules.heads import ProjectionHead
    from mmresearch.modules.losses import InfoNCELoss
    from mmresearch.modules.temperature import LearnableTemperature

    image_head = partial(ProjectionHead, out_dim=8)
    text_encoder = instantiate(OmegaConf.create(two["towers"]["text"]["encoder"]))
    in_python = DualEncoder.image_text(image_encoder, text_encoder, image_head, partial(ProjectionHead, out_dim=8), InfoNCELoss(),
                                       LearnableTemperature(init_tau=0.07), optimizer=torch.optim.AdamW)
    a, b = from_config.state_dict(), in_python.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    batch = _batch()
    torch.manual_seed(1)  # the same dropout masks
    want = in_python(batch)["loss"]
    torch.manual_seed(1)
    assert torch.equal(from_config(batch)["loss"], want)
