"""Gradient accumulation (``trainer.accumulate_grad_batches``) with a contrastive loss: the step
uses the mean of the micro-batches' gradients, each micro-batch's loss having only its own
negatives. It is *not* the gradient of one big batch (accumulation adds no negatives)."""

import copy
from functools import partial

import lightning as L
import torch
from torch.utils.data import DataLoader

from mmresearch.data.datamodule import ShapesDataModule
from mmresearch.data.tokenizer import build_shapes_tokenizer
from mmresearch.models.dual_encoder import DualEncoder
from mmresearch.modules.encoders.image import TimmImageEncoder
from mmresearch.modules.encoders.text import HFTextEncoder
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.losses import InfoNCELoss
from mmresearch.modules.temperature import LearnableTemperature

TINY_BERT = dict(model_type="bert", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=40,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # deterministic forward


class _GradCapture(L.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None}


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_accumulation_averages_micro_batch_gradients_and_adds_no_negatives():
    torch.manual_seed(0)
    tokenizer = build_shapes_tokenizer()
    model = DualEncoder.image_text(  # LayerNorm towers (no BatchNorm): a sample's features do not depend on its batch
        image_encoder=TimmImageEncoder("test_vit", img_size=32, model_kwargs=dict(patch_size=8)),
        text_encoder=HFTextEncoder(config=TINY_BERT, vocab_size=len(tokenizer)),
        image_head=partial(ProjectionHead, out_dim=16), text_head=partial(ProjectionHead, out_dim=16),
        loss=InfoNCELoss(), temperature=LearnableTemperature(init_tau=0.07),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    data = ShapesDataModule(tokenizer=tokenizer, image_size=32, train_size=16, val_size=8, test_size=8, batch_size=8, eval_batch_size=8)
    data.setup("fit")
    micro = list(data.train_dataloader())[:2]
    reference = copy.deepcopy(model)

    capture = _GradCapture()
    trainer = L.Trainer(max_steps=1, accumulate_grad_batches=2, accelerator="cpu", precision="32-true", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[capture])
    trainer.fit(model, train_dataloaders=DataLoader(micro, batch_size=None, collate_fn=lambda b: b))

    # expected: the mean of the two micro-batch losses' gradients
    expected = _grads(reference, (reference(micro[0])["loss"] + reference(micro[1])["loss"]) / 2)
    # one 16-pair batch: every pair also has the other micro-batch's 8 negatives
    img = torch.cat([reference.embed_images(b.images) for b in micro])
    txt = torch.cat([reference.embed_texts(b.input_ids, b.attention_mask) for b in micro])
    ids = torch.cat([b.image_ids for b in micro])
    assert ids.unique().numel() == 16
    big = _grads(reference, reference.objectives["image_text"].loss(img, txt, reference.temperature(), ids, ids)["loss"])

    assert set(capture.grads) == set(expected)
    for name, grad in capture.grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6)
    differs = max(float((expected[n] - big[n]).abs().max() / big[n].abs().max().clamp_min(1e-12)) for n in big)
    assert differs > 1e-2  # accumulation is not the big batch
