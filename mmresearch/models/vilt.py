"""ViLT-style single-stream fused model (Kim et al., 2021): ITM, MLM, VQA, fused retrieval.

Image patches and word tokens go through one transformer (:class:`SingleStreamEncoder`). The
objectives are switched on and weighted by ``objectives`` (config ``model.objectives``):

- ``itm``: matched / not matched on the pooled output; with probability ``itm.negative_ratio`` a
  pair's image (or text, ``itm.replace``) is replaced by one of another image of the batch:
  uniformly (``itm.negatives=random``) or drawn from ``softmax(similarity / tau)`` of the
  model's own unimodal contrastive scores and temperature (``hard``, as ALBEF).
- ``mlm``: masked language modelling of the caption given the image, 15% with the 80/10/10 rule,
  optional whole-word masking; loss on masked tokens only.
- ``itc``: optional contrastive alignment of the unimodal passes (text alone, image alone through
  the same blocks), with the configured contrastive loss and temperature: a cheap first stage
  for retrieval and hard ITM negatives (off in pure ViLT).
- ``vqa``: a classifier over the answer vocabulary on the pooled output, soft-score BCE
  (VQA-v2 style); trained on the data's questions (``data.train_questions=true``).

Evaluation: fused retrieval (ITM scores of candidate pairs; see ``retrieval``), ITM accuracy,
the compositionality probe scored by ITM, and the VQA score, under the same metric names as the
dual encoder (``val/rsum``, ``test/t2i_R@1``...), plus ``test/itm_acc``, ``test/vqa_score`` and
``test/pairs_scored``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.vqa import one_hot_soft_scores, vqa_loss
from mmresearch.models.fused_base import DEFAULT_INIT_MIN_SHARE, FusedVisionLanguageModule, merged_options, mlm_masker, objective_weights
from mmresearch.modules.fusion_heads import ITMHead, MLMHead, VQAHead
from mmresearch.modules.fusions.single_stream import SingleStreamEncoder
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.itm_negatives import sample_negative_partners
from mmresearch.utils.errors import ConfigError, check_choice

log = logging.getLogger(__name__)

OBJECTIVES = ("itm", "mlm", "itc", "vqa")
DEFAULT_OBJECTIVES = {"itm": 1.0, "mlm": 1.0, "itc": 0.0, "vqa": 0.0}
DEFAULT_ITM = {"negatives": "random", "replace": "image", "negative_ratio": 0.5}
DEFAULT_MLM = {"probability": 0.15, "whole_word": True, "mask_replace_prob": 0.8, "random_replace_prob": 0.1}


class ViLT(FusedVisionLanguageModule):
    """Single-stream fused vision-language model.

    Args:
        image_encoder: a timm ViT encoder (its patch embedding and blocks form the joint stack).
        text_encoder: a BERT-style encoder (its word/position embeddings are used).
        optimizer, scheduler: see :class:`VisionLanguageModule`.
        tokenizer: the data's tokenizer (MLM needs its mask/special tokens and vocabulary).
        num_answers: size of the VQA answer vocabulary (filled from the data).
        objectives: ``{itm, mlm, itc, vqa}`` loss weights; 0 switches one off.
        itm: ``negatives`` (random | hard), ``replace`` (image | text), ``negative_ratio``.
        mlm: ``probability``, ``whole_word``, ``mask_replace_prob``, ``random_replace_prob``.
        retrieval: ``first_stage`` (self: the unimodal contrastive scores; none: fuse every pair;
            or a dual-encoder checkpoint path), ``top_k``, ``batch_size`` (pairs fused at once),
            ``max_full_pairs``.
        max_image_tokens: patches kept per image in training (ViLT: 200).
        pooling: the joint representation for ITM/VQA: ``cls`` (ViLT) or ``mean`` (of all states).
        embed_dim: width of the contrastive projections (``itc``).
        loss, temperature: the contrastive loss and temperature of ``itc``.
        init_from: a checkpoint whose matching weights initialise the model (e.g. VQA
            fine-tuning from ITM+MLM pretraining); the new heads keep their initialisation.
        init_from_min_share: refuse an ``init_from`` checkpoint that fills less than this share
            of the parameters (in elements; e.g. a run of another family).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        optimizer: Callable,
        scheduler: Optional[Callable] = None,
        tokenizer: Any = None,
        num_answers: Optional[int] = None,
        objectives: Optional[Mapping[str, float]] = None,
        itm: Optional[Mapping[str, Any]] = None,
        mlm: Optional[Mapping[str, Any]] = None,
        retrieval: Optional[Mapping[str, Any]] = None,
        max_image_tokens: Optional[int] = 200,
        pooling: str = "cls",
        embed_dim: int = 128,
        loss: Optional[nn.Module] = None,
        temperature: Optional[nn.Module] = None,
        init_from: Optional[str] = None,
        init_from_min_share: float = DEFAULT_INIT_MIN_SHARE,
        eval_chunk_size: Optional[int] = 1024,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, retrieval=retrieval, eval_chunk_size=eval_chunk_size)
        self.weights = objective_weights(DEFAULT_OBJECTIVES, objectives)
        self.itm_cfg = merged_options(DEFAULT_ITM, itm, "model.itm")
        check_choice("model.itm.negatives", self.itm_cfg["negatives"], ("random", "hard"))
        check_choice("model.itm.replace", self.itm_cfg["replace"], ("image", "text"))
        self.mlm_cfg = merged_options(DEFAULT_MLM, mlm, "model.mlm")
        if self.itm_cfg["negatives"] == "hard" and self.weights["itc"] <= 0:
            raise ConfigError("model.itm.negatives=hard samples from the model's contrastive scores: set model.objectives.itc > 0")

        for key, enc in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if getattr(enc, "compile_options", None) is not None:  # the joint stack takes their parts, not them
                raise ConfigError(f"{key}.compile=true has no effect in model=vilt (one joint stack is built from the "
                                  f"encoders' layers): set {key}.compile=false")
        self.encoder = SingleStreamEncoder(image_encoder, text_encoder, max_image_tokens=max_image_tokens, pooling=pooling)
        d = self.encoder.hidden_size
        self.itm_head = ITMHead(d)
        tied = self.encoder.word_embeddings if isinstance(self.encoder.text_proj, nn.Identity) else None
        self.mlm_head = MLMHead(d, self.encoder.vocab_size, tied_embeddings=tied) if self.weights["mlm"] > 0 else None
        self.masker = None
        if self.weights["mlm"] > 0:
            self.masker = mlm_masker(tokenizer, self.mlm_cfg)
        self.vqa_head = None
        if self.weights["vqa"] > 0:
            if not num_answers:
                raise ConfigError("model.objectives.vqa > 0 needs model.num_answers (filled from the data's answer vocabulary)")
            self.vqa_head = VQAHead(d, int(num_answers))
        self.image_proj = self.text_proj = None
        self.loss, self.temperature = loss, temperature
        if self.weights["itc"] > 0:
            if loss is None or temperature is None:
                raise ConfigError("model.objectives.itc > 0 needs a contrastive loss and a temperature (config groups loss, temperature)")
            self.image_proj = ProjectionHead(d, embed_dim)
            self.text_proj = ProjectionHead(d, embed_dim)
        else:
            self.loss = self.temperature = None  # not trained: keep them out of the optimizer/state

        self.configure_pair_stores(self.encoder.max_text_positions, tokenizer)
        self.trains_itm = self.weights["itm"] > 0
        if init_from:
            self.load_matching_weights(init_from, min_share=init_from_min_share)

    # -- embeddings of the unimodal passes (itc) ----------------------------------------------
    @property
    def has_embeddings(self) -> bool:
        return self.image_proj is not None

    def embed_images(self, images: Tensor) -> Tensor:
        if self.image_proj is None:
            raise RuntimeError("this ViLT has no contrastive projections (model.objectives.itc = 0)")
        return self.image_proj(self.encoder.encode_image_only(images))

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        if self.text_proj is None:
            raise RuntimeError("this ViLT has no contrastive projections (model.objectives.itc = 0)")
        return self.text_proj(self.encoder.encode_text_only(input_ids, attention_mask))

    # -- objectives ---------------------------------------------------------------------------
    def fused_pooled(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encoder(images, input_ids, attention_mask).pooled

    def _itm_loss(self, batch: ImageTextBatch, similarity: Optional[Tensor]) -> Dict[str, Tensor]:
        b = batch.num_images
        partner = sample_negative_partners(batch.image_ids, similarity)
        replace = (torch.rand(b, device=self.device) < float(self.itm_cfg["negative_ratio"])) & (partner >= 0)
        rows = torch.where(replace, partner, torch.arange(b, device=self.device))
        images, ids, mask = batch.images, batch.input_ids, batch.attention_mask
        if self.itm_cfg["replace"] == "image":
            images = images[rows]
        else:
            ids, mask = ids[rows], mask[rows]
        logits = self.itm_logits(images, ids, mask)
        labels = (~replace).long()
        return {"itm": F.cross_entropy(logits, labels), "itm_acc": (logits.argmax(1) == labels).float().mean()}

    def _mlm_loss(self, batch: ImageTextBatch) -> Dict[str, Tensor]:
        masked = self.masker(batch.input_ids, batch.attention_mask)
        out = self.encoder(batch.images, masked.input_ids, batch.attention_mask)
        chosen = masked.labels != -100
        logits = self.mlm_head(out.text_tokens[chosen])  # only the masked positions: [M, V]
        target = masked.labels[chosen]
        if target.numel() == 0:
            zero = out.text_tokens.sum() * 0.0
            return {"mlm": zero, "mlm_acc": zero.detach()}
        return {"mlm": F.cross_entropy(logits.float(), target), "mlm_acc": (logits.argmax(1) == target).float().mean()}

    def vqa_logits(self, batch: ImageTextBatch) -> tuple[Tensor, Tensor]:
        b, q, length = batch.question_input_ids.shape
        images = batch.images.repeat_interleave(q, dim=0)
        out = self.encoder(images, batch.question_input_ids.reshape(b * q, length), batch.question_attention_mask.reshape(b * q, length))
        logits = self.vqa_head(out.pooled)
        return logits, one_hot_soft_scores(batch.answers.reshape(-1), logits.shape[1]).to(logits.dtype)

    def _itc(self, batch: ImageTextBatch) -> tuple[Dict[str, Tensor], Tensor]:
        """The contrastive terms, and the detached ``[T, B]`` text-image logits ``cosine / tau``
        (the temperature's logit scale) that hard ITM negatives are drawn from."""
        image_emb = self.embed_images(batch.images)
        text_emb = self.embed_texts(batch.input_ids, batch.attention_mask)
        scale = self.temperature()
        terms = self.loss(image_emb, text_emb, scale, batch.image_ids, batch.text_image_ids)
        logits = scale.detach() * (text_emb @ image_emb.T).detach()  # [texts, images] / tau: hard ITM negatives, as ALBEF
        return {f"itc_{k}" if k != "loss" else "itc": v for k, v in terms.items()}, logits

    def forward(self, batch: ImageTextBatch) -> Dict[str, Tensor]:
        """Weighted sum of the enabled objectives (``loss``) and every term, on a paired batch."""
        terms: Dict[str, Tensor] = {}
        itc_logits = None
        if self.weights["itc"] > 0:
            itc_terms, itc_logits = self._itc(batch)
            terms.update(itc_terms)
        if self.weights["itm"] > 0:
            sim = itc_logits if self.itm_cfg["negatives"] == "hard" else None  # [texts, images], / tau
            if sim is not None and self.itm_cfg["replace"] == "text":
                sim = sim.T  # a text partner per image (replace=image: an image partner per text)
            terms.update(self._itm_loss(batch, sim))
        if self.weights["mlm"] > 0:
            terms.update(self._mlm_loss(batch))
        if self.weights["vqa"] > 0:
            if batch.question_input_ids is None:
                raise ConfigError("model.objectives.vqa > 0 needs questions in the training batches: set data.train_questions=true")
            logits, soft = self.vqa_logits(batch)
            terms["vqa"] = vqa_loss(logits.float(), soft.float())
        terms["loss"] = sum(self.weights[k] * terms[k] for k in OBJECTIVES if self.weights[k] > 0 and k in terms)
        return terms
