"""ViLT-style single-stream fused model (Kim et al., 2021): ITM, MLM, VQA, fused retrieval.

Image patches and word tokens go through one transformer (:class:`SingleStreamEncoder`). The
objectives it trains come from ``model.objectives`` (:mod:`mmresearch.modules.objectives`):

- ``itm`` (:class:`ITMObjective`): matched / not matched on the pooled output, a share of the
  pairs with a replaced image (or caption), uniformly or hard (from ``itc``'s scores).
- ``mlm`` (:class:`MLMObjective`): masked language modelling of the caption given the image.
- ``itc`` (:class:`ContrastiveObjective`): optional contrastive alignment of the unimodal passes
  (text alone, image alone through the same blocks), with the configured contrastive loss and
  temperature: a cheap first stage for retrieval and hard ITM negatives (off in pure ViLT).
- ``vqa`` (:class:`VQAObjective`): a classifier over the answer vocabulary on the pooled output.

Evaluation (:class:`FusedVisionLanguageModule`): fused retrieval (ITM scores of candidate pairs;
see ``retrieval``), ITM accuracy, the compositionality probe scored by ITM, and the VQA score,
under the same metric names as the dual encoder (``val/rsum``, ``test/t2i_R@1``...), plus
``test/itm_acc``, ``test/vqa_score`` and ``test/pairs_scored``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional

from torch import Tensor, nn

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.vqa import one_hot_soft_scores
from mmresearch.models.fused_base import FusedVisionLanguageModule
from mmresearch.modules.fusion_heads import ITMHead, MLMHead, VQAHead
from mmresearch.modules.fusions.single_stream import SingleStreamEncoder
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.objectives.base import Objective, StepOutputs, trained_objectives
from mmresearch.utils.errors import ConfigError

log = logging.getLogger(__name__)


class ViLT(FusedVisionLanguageModule):
    """Single-stream fused vision-language model.

    Args:
        image_encoder: a timm ViT encoder (its patch embedding and blocks form the joint stack).
        text_encoder: a BERT-style encoder (its word/position embeddings are used).
        objectives: ``name -> Objective`` (config ``model.objectives``; weight 0: not trained):
            ``itm``, ``mlm``, ``itc`` (the contrastive first stage; gives the model projections and
            embeddings), ``vqa`` (gives it a VQA head).
        optimizer, scheduler: see :class:`MultimodalModule`.
        tokenizer: the data's tokenizer (MLM needs its mask/special tokens and vocabulary).
        num_answers: size of the VQA answer vocabulary (filled from the data).
        retrieval: ``first_stage`` (self: the unimodal contrastive scores; none: fuse every pair;
            or a dual-encoder checkpoint path), ``top_k``, ``batch_size`` (pairs fused at once),
            ``max_full_pairs``.
        max_image_tokens: patches kept per image in training (ViLT: 200).
        pooling: the joint representation for ITM/VQA: ``cls`` (ViLT) or ``mean`` (of all states).
        embed_dim: width of the contrastive projections (``itc``).
        init_from: a checkpoint whose matching weights initialise the model (e.g. VQA
            fine-tuning from ITM+MLM pretraining); the new heads keep their initialisation.
        init_from_min_share: refuse an ``init_from`` checkpoint that fills less than this share
            of the parameters (in elements; e.g. a run of another family).
    """

    unused_group_notes = {"loss": "it has no contrastive objective unless model.objectives.itc.weight > 0",
                          "temperature": "it has no contrastive objective unless model.objectives.itc.weight > 0"}

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        objectives: Mapping[str, Objective],
        optimizer: Callable,
        scheduler: Optional[Callable] = None,
        tokenizer: Any = None,
        num_answers: Optional[int] = None,
        retrieval: Optional[Mapping[str, Any]] = None,
        max_image_tokens: Optional[int] = 200,
        pooling: str = "cls",
        embed_dim: int = 128,
        init_from: Optional[str] = None,
        init_from_min_share: float = 0.5,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, tokenizer=tokenizer, retrieval=retrieval)
        active = trained_objectives(objectives)
        for key, enc in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if getattr(enc, "compile_options", None) is not None:  # the joint stack takes their parts, not them
                raise ConfigError(f"{key}.compile=true has no effect in model=vilt (one joint stack is built from the "
                                  f"encoders' layers): set {key}.compile=false")
        self.encoder = SingleStreamEncoder(image_encoder, text_encoder, max_image_tokens=max_image_tokens, pooling=pooling)
        d = self.encoder.hidden_size
        self.itm_head = ITMHead(d)
        tied = self.encoder.word_embeddings if isinstance(self.encoder.text_proj, nn.Identity) else None
        self.mlm_head = MLMHead(d, self.encoder.vocab_size, tied_embeddings=tied) if "mlm" in active else None
        self.vqa_head = None
        if "vqa" in active:
            if not num_answers:
                raise ConfigError("model.objectives.vqa needs model.num_answers (filled from the data's answer vocabulary)")
            self.vqa_head = VQAHead(d, int(num_answers))
        self.image_proj = self.text_proj = None
        if "itc" in active:
            self.image_proj = ProjectionHead(d, embed_dim)
            self.text_proj = ProjectionHead(d, embed_dim)
        self.register_objectives(objectives)

        self.configure_pair_stores(self.encoder.max_text_positions, tokenizer)
        if init_from:
            self.load_matching_weights(init_from, min_share=init_from_min_share)

    # -- embeddings of the unimodal passes (itc) ----------------------------------------------
    @property
    def has_embeddings(self) -> bool:
        return self.image_proj is not None

    def embed_images(self, images: Tensor) -> Tensor:
        if self.image_proj is None:
            raise RuntimeError("this ViLT has no contrastive projections (model.objectives.itc is not trained)")
        return self.image_proj(self.encoder.encode_image_only(images))

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        if self.text_proj is None:
            raise RuntimeError("this ViLT has no contrastive projections (model.objectives.itc is not trained)")
        return self.text_proj(self.encoder.encode_text_only(input_ids, attention_mask))

    # -- what the objectives use ----------------------------------------------------------------
    def step_outputs(self, batch: ImageTextBatch) -> StepOutputs:
        """The unimodal contrastive embeddings when ``itc`` is trained (the joint passes are the
        objectives' own: each fuses its own pairs)."""
        outputs = StepOutputs()
        if self.has_embeddings:
            outputs.embeddings["image"] = self.embed_images(batch.images)
            outputs.embeddings["text"] = self.embed_texts(batch.input_ids, batch.attention_mask)
        return outputs

    def fused_pooled(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encoder(images, input_ids, attention_mask).pooled

    def mlm_text_states(self, batch: ImageTextBatch, masked_input_ids: Tensor, outputs: StepOutputs) -> Tensor:
        """``[B, L, D]`` the joint stack's states of the masked captions with their images."""
        return self.encoder(batch.images, masked_input_ids, batch.attention_mask).text_tokens

    def vqa_logits(self, batch: ImageTextBatch) -> tuple[Tensor, Tensor]:
        b, q, length = batch.question_input_ids.shape
        images = batch.images.repeat_interleave(q, dim=0)
        out = self.encoder(images, batch.question_input_ids.reshape(b * q, length), batch.question_attention_mask.reshape(b * q, length))
        logits = self.vqa_head(out.pooled)
        return logits, one_hot_soft_scores(batch.answers.reshape(-1), logits.shape[1]).to(logits.dtype)
