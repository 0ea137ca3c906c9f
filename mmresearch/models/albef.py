"""ALBEF-style align-then-fuse model (Li et al., 2021, "Align before Fuse").

An image encoder (timm) and a text encoder (the first ``text_layers`` layers of a BERT-style
model) are aligned by a contrastive loss (ITC) before a fusion encoder (the remaining layers, with
cross-attention from text to image tokens) is trained on image-text matching (ITM) and masked
language modelling (MLM). Objectives are switched on and weighted by ``objectives``:

- ``itc``: online features against the momentum features of the whole batch (all ranks) and a
  queue of earlier ones, with soft targets ``alpha * softmax(momentum similarities) + (1 -
  alpha) * ground truth`` (momentum distillation); image ids make every caption of an image a
  positive. ``alpha`` ramps linearly from 0 over the first epoch (``distill.warmup_steps``).
- ``itm``: matched / not matched on the fused [CLS]: every pair, plus for each image one negative
  text and for each text one negative image drawn from the softmax of the ITC similarities over
  the batch of every rank, never a positive (``itm.negatives=hard``; ``random``: uniform).
- ``mlm``: masked language modelling through the fusion encoder, distilled from the momentum
  model's predictions with the same ``alpha``.
- ``vqa``: a classifier over the answer vocabulary on the fused [CLS] (soft-score BCE).

Momentum (EMA) copies of the image encoder, text encoder, projections (and, for MLM distillation,
the fusion encoder and MLM head) are updated after each optimizer step. Retrieval: the ITC
similarities pick the ``retrieval.top_k`` candidates per query, the ITM head rescores them; both
are reported (``test/first_stage/*``: ITC alone, ``test/*``: after rerank).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.fused_retrieval import PairScorer
from mmresearch.evaluation.pair_store import EvalPairs
from mmresearch.evaluation.vqa import one_hot_soft_scores, vqa_loss
from mmresearch.models.fused_base import DEFAULT_INIT_MIN_SHARE, FusedVisionLanguageModule, merged_options, mlm_masker, objective_weights
from mmresearch.modules.encoders.outputs import EncoderOutput
from mmresearch.modules.fusion_heads import ITMHead, MLMHead, VQAHead
from mmresearch.modules.fusions import cross_attention
from mmresearch.modules.fusions.cross_attention import CrossAttentionFusion, load_bert_layer
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.itm_negatives import sample_negative_partners
from mmresearch.modules.losses.distributed import all_gather_ids, all_gather_no_grad, all_gather_tokens
from mmresearch.modules.losses.momentum_distillation import QueueContrastiveLoss, mlm_distillation_loss
from mmresearch.modules.momentum import MomentumCopy
from mmresearch.modules.queues import FeatureQueue
from mmresearch.utils.errors import ConfigError, check_choice

log = logging.getLogger(__name__)

OBJECTIVES = ("itc", "itm", "mlm", "vqa")
DEFAULT_OBJECTIVES = {"itc": 1.0, "itm": 1.0, "mlm": 1.0, "vqa": 0.0}
DEFAULT_ITM = {"negatives": "hard"}
DEFAULT_MLM = {"probability": 0.15, "whole_word": False, "mask_replace_prob": 0.8, "random_replace_prob": 0.1}
DEFAULT_DISTILL = {"alpha": 0.4, "warmup_steps": None}


class ALBEF(FusedVisionLanguageModule):
    """Align-then-fuse vision-language model.

    Args:
        image_encoder: a :class:`TimmImageEncoder` (ViT or CNN): its pooled output feeds ITC, its
            tokens (patches, or the cells of a CNN feature map) the fusion's cross-attention.
        text_encoder: a :class:`HFTextEncoder` around a BERT-style model.
        optimizer, scheduler: see :class:`VisionLanguageModule`.
        temperature: the ITC temperature (config group ``temperature``; ALBEF: learnable, 0.07).
        tokenizer: the data's tokenizer (MLM needs its mask token and vocabulary).
        num_answers: size of the VQA answer vocabulary (filled from the data).
        objectives: ``{itc, itm, mlm, vqa}`` loss weights; 0 switches one off.
        itm: ``negatives``: ``hard`` (from the ITC similarities) or ``random``.
        mlm: ``probability``, ``whole_word``, ``mask_replace_prob``, ``random_replace_prob``.
        distill: ``alpha`` (0.4; 0 = no distillation) and ``warmup_steps`` over which it ramps up
            from 0 (null: one epoch).
        retrieval: see :class:`FusedVisionLanguageModule` (``first_stage=self`` is ITC).
        text_layers: layers the text encoder keeps (ALBEF: 6 of BERT-base's 12); the following
            layers initialise the fusion layers' self-attention and feed-forward. null: keep all.
        fusion_layers: number of fusion layers (ALBEF: 6); those without a text layer to start
            from are initialised at random.
        image_positions: learned positions for the image tokens in the fusion: ``auto`` (for
            CNN feature maps, not for ViTs, whose tokens carry them), true or false.
        embed_dim: width of the ITC space (ALBEF: 256).
        momentum: EMA coefficient of the momentum encoders (ALBEF: 0.995).
        queue_size: momentum features kept as extra negatives (ALBEF: 65,536); 0: none (the
            negatives are the momentum features of the batch of every rank).
        init_from: a checkpoint whose matching weights initialise the model (VQA fine-tuning).
        init_from_min_share: refuse an ``init_from`` checkpoint that fills less than this share
            of the parameters (in elements; the momentum copy not counted), e.g. a run of another family.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        optimizer: Callable,
        scheduler: Optional[Callable] = None,
        temperature: Optional[nn.Module] = None,
        tokenizer: Any = None,
        num_answers: Optional[int] = None,
        objectives: Optional[Mapping[str, float]] = None,
        itm: Optional[Mapping[str, Any]] = None,
        mlm: Optional[Mapping[str, Any]] = None,
        distill: Optional[Mapping[str, Any]] = None,
        retrieval: Optional[Mapping[str, Any]] = None,
        text_layers: Optional[int] = None,
        fusion_layers: int = 6,
        image_positions: Any = "auto",
        embed_dim: int = 256,
        momentum: float = 0.995,
        queue_size: int = 65536,
        init_from: Optional[str] = None,
        init_from_min_share: float = DEFAULT_INIT_MIN_SHARE,
        eval_chunk_size: Optional[int] = 1024,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, retrieval=retrieval, eval_chunk_size=eval_chunk_size)
        self.weights = objective_weights(DEFAULT_OBJECTIVES, objectives)
        self.itm_cfg = merged_options(DEFAULT_ITM, itm, "model.itm")
        check_choice("model.itm.negatives", self.itm_cfg["negatives"], ("random", "hard"))
        self.mlm_cfg = merged_options(DEFAULT_MLM, mlm, "model.mlm")
        self.distill_cfg = merged_options(DEFAULT_DISTILL, distill, "model.distill")
        alpha = self.distill_cfg["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"model.distill.alpha must be in [0, 1], got {alpha!r}")
        uses_similarity = self.weights["itc"] > 0
        if self.itm_cfg["negatives"] == "hard" and self.weights["itm"] > 0 and not uses_similarity:
            raise ConfigError("model.itm.negatives=hard samples from the ITC similarities: set model.objectives.itc > 0 (or itm.negatives=random)")
        if temperature is None:
            raise ConfigError("model=albef needs a temperature (config group temperature) for its contrastive alignment")

        for key, encoder in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if not hasattr(encoder, "output"):
                raise ConfigError(f"model=albef needs token features from {key} ({type(encoder).__name__} has no `output` switch)")
            encoder.output = "both"
        hf = getattr(text_encoder, "model", None)
        if hf is None or not hasattr(hf, "config"):
            raise ConfigError("model=albef needs a Hugging Face BERT-style text_encoder (mmresearch.modules.encoders.text.HFTextEncoder)")
        self.image_encoder, self.text_encoder, self.temperature = image_encoder, text_encoder, temperature

        # -- text layers | fusion layers ---------------------------------------------------------
        removed = cross_attention.split_bert_layers(hf, int(text_layers)) if text_layers is not None else []
        hc = hf.config
        if image_positions == "auto":
            image_positions = not hasattr(getattr(image_encoder, "model", None), "pos_embed")
        self.fusion = CrossAttentionFusion(
            hidden_size=int(hc.hidden_size),
            num_layers=int(fusion_layers),
            num_heads=int(hc.num_attention_heads),
            intermediate_size=int(hc.intermediate_size),
            image_dim=int(image_encoder.token_dim),
            num_image_tokens=getattr(image_encoder, "num_tokens", None),
            image_positions=bool(image_positions),
            dropout=float(getattr(hc, "hidden_dropout_prob", 0.0)),
            layer_norm_eps=float(getattr(hc, "layer_norm_eps", 1e-12)),
            activation=str(getattr(hc, "hidden_act", "gelu")),
        )
        for layer, source in zip(self.fusion.layers, removed):
            load_bert_layer(layer, source)
        if removed:
            log.info("model=albef: text encoder keeps %d layers; %d fusion layers start from the next %d", text_layers, len(self.fusion.layers), min(len(removed), len(self.fusion.layers)))
        d = int(hc.hidden_size)

        # -- heads ----------------------------------------------------------------------------------
        self.image_proj = ProjectionHead(int(image_encoder.output_dim), int(embed_dim), bias=True)
        self.text_proj = ProjectionHead(d, int(embed_dim), bias=True)
        self.itm_head = ITMHead(d)
        self.masker = self.mlm_head = None
        if self.weights["mlm"] > 0:
            self.masker = mlm_masker(tokenizer, self.mlm_cfg)
            self.mlm_head = MLMHead(d, int(hc.vocab_size), tied_embeddings=hf.get_input_embeddings())
        if self.weights["vqa"] > 0:
            if not num_answers:
                raise ConfigError("model.objectives.vqa > 0 needs model.num_answers (filled from the data's answer vocabulary)")
            self.vqa_head = VQAHead(d, int(num_answers))
        # parts no objective trains get no gradient (DDP needs every trained parameter used)
        if self.weights["itc"] <= 0:
            for module in (self.image_proj, self.text_proj, self.temperature):
                module.requires_grad_(False)
        if self.weights["itm"] <= 0:
            self.itm_head.requires_grad_(False)
        if not any(self.weights[k] > 0 for k in ("itm", "mlm", "vqa")):
            self.fusion.requires_grad_(False)  # ITC alone

        # -- momentum model and queue -----------------------------------------------------------
        self.itc_loss = QueueContrastiveLoss()
        self.momentum = self.queue = None
        if self.weights["itc"] > 0 or (self.mlm_head is not None and alpha > 0):
            self.momentum = MomentumCopy(self._momentum_sources(), momentum=momentum)
        if self.weights["itc"] > 0 and queue_size:
            self.queue = FeatureQueue(int(queue_size), int(embed_dim))
        # identical on every rank by construction (every rank enqueues the same gathered rows):
        # DDP does not broadcast the queue at every forward. The momentum weights get no
        # gradient (never reduced) and are broadcast once when DDP wraps the model.
        self._ddp_params_and_buffers_to_ignore = [f"queue.{n}" for n, _ in self.queue.named_buffers()] if self.queue else []

        self.configure_pair_stores(int(getattr(hc, "max_position_embeddings", 512)), tokenizer)
        self.trains_itm = self.weights["itm"] > 0
        if init_from:
            # the queue holds another run's features and image ids (false positives here)
            loaded = self.load_matching_weights(init_from, skip=("queue.",), min_share=init_from_min_share, derived=("momentum.",))
            if self.momentum is not None and not any(k.startswith("momentum.") for k in loaded):
                self.momentum = MomentumCopy(self._momentum_sources(), momentum=momentum)  # start from the loaded weights

    @property
    def has_embeddings(self) -> bool:
        """The ITC projections are trained (retrieval first stage, zero-shot, probes)."""
        return self.weights["itc"] > 0

    def _momentum_sources(self) -> Dict[str, nn.Module]:
        """The online modules the momentum model follows."""
        sources = {"image_encoder": self.image_encoder, "image_proj": self.image_proj, "text_encoder": self.text_encoder, "text_proj": self.text_proj}
        if self.mlm_head is not None and self.distill_cfg["alpha"] > 0:
            sources.update(fusion=self.fusion, mlm_head=self.mlm_head)
        return sources

    # -- unimodal embeddings (ITC; retrieval first stage, zero-shot, probes) ----------------------
    def embed_images(self, images: Tensor) -> Tensor:
        return self.image_proj(self.image_encoder(images).pooled)

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.text_proj(self.text_encoder(input_ids, attention_mask).pooled)

    def fuse(self, text: EncoderOutput, image_tokens: Tensor, prepared: bool = False):
        """Fusion of encoded texts with image tokens: :class:`FusionOutput`."""
        return self.fusion(text.tokens, text.mask, image_tokens, prepared=prepared)

    def fused_pooled(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.fuse(self.text_encoder(input_ids, attention_mask), self.image_encoder(images).tokens).pooled

    def vqa_logits(self, batch: ImageTextBatch) -> tuple[Tensor, Tensor]:
        b, q, length = batch.question_input_ids.shape
        image = self.fusion.prepare_image(self.image_encoder(batch.images).tokens).repeat_interleave(q, dim=0)
        question = self.text_encoder(batch.question_input_ids.reshape(b * q, length), batch.question_attention_mask.reshape(b * q, length))
        logits = self.vqa_head(self.fuse(question, image, prepared=True).pooled)
        return logits, one_hot_soft_scores(batch.answers.reshape(-1), logits.shape[1]).to(logits.dtype)

    def pair_scorer(self, pairs: EvalPairs) -> PairScorer:
        """Encodes every image and caption of the split once; each candidate pair then costs only
        the fusion layers (ALBEF's evaluation)."""
        n = int(self.retrieval_cfg["batch_size"])
        width = max(int(pairs.attention_mask.sum(1).max()), 1)
        images = torch.cat([self.fusion.prepare_image(self.image_encoder(pairs.images[i : i + n]).tokens) for i in range(0, pairs.images.shape[0], n)])
        ids, mask = pairs.input_ids[:, :width], pairs.attention_mask[:, :width]
        texts = torch.cat([self.text_encoder(ids[i : i + n], mask[i : i + n]).tokens for i in range(0, ids.shape[0], n)])

        def score(image_rows: Tensor, text_rows: Tensor) -> Tensor:
            image_rows, text_rows = image_rows.to(self.device), text_rows.to(self.device)
            out = self.fusion(texts[text_rows], mask[text_rows], images[image_rows], prepared=True)
            return self.itm_head.score(out.pooled)

        return score

    # -- training -----------------------------------------------------------------------------------
    def current_alpha(self) -> float:
        """The distillation weight at this step: ``alpha * min(1, step / warmup_steps)``, the
        warm-up being one epoch unless ``distill.warmup_steps`` is set (ALBEF)."""
        alpha = float(self.distill_cfg["alpha"])
        warmup = self.distill_cfg["warmup_steps"]
        if warmup is None:
            trainer = self._trainer
            batches = getattr(trainer, "num_training_batches", math.inf) if trainer is not None else math.inf
            if not math.isfinite(batches):
                return alpha
            warmup = max(int(batches) // max(int(trainer.accumulate_grad_batches), 1), 1)
        return alpha * min(1.0, self.global_step / max(int(warmup), 1))

    def _itc(self, batch: ImageTextBatch, image_feat: Tensor, text_feat: Tensor, momentum_image: EncoderOutput, alpha: float) -> Dict[str, Tensor]:
        with torch.no_grad():
            image_feat_m = self.momentum["image_proj"](momentum_image.pooled)
            text_feat_m = self.momentum["text_proj"](self.momentum["text_encoder"](batch.input_ids, batch.attention_mask).pooled)
            ids_all = all_gather_ids(batch.image_ids)  # the whole batch of every rank (identity on one process)
            image_all, text_all = all_gather_no_grad(image_feat_m), all_gather_no_grad(text_feat_m)
            image_cols, text_cols, column_ids = image_all, text_all, ids_all
            if self.queue is not None:
                queued_images, queued_texts, queued_ids = self.queue.contents()
                image_cols = torch.cat([image_all, queued_images.to(image_all.dtype)])
                text_cols = torch.cat([text_all, queued_texts.to(text_all.dtype)])
                column_ids = torch.cat([ids_all, queued_ids])
        terms = self.itc_loss(image_feat, text_feat, image_feat_m, text_feat_m, batch.image_ids, image_cols, text_cols, column_ids, self.temperature(), alpha)
        if self.training and self.queue is not None:
            self.queue.enqueue(image_all, text_all, ids_all)
        return {"itc" if k == "loss" else f"itc_{k}": v for k, v in terms.items()}

    def _itm(self, batch: ImageTextBatch, image: EncoderOutput, text: EncoderOutput, image_feat: Tensor, text_feat: Tensor) -> Dict[str, Tensor]:
        b = batch.num_images
        image_tokens = self.fusion.prepare_image(image.tokens)  # [B, N, D]
        with torch.no_grad():
            ids_all = all_gather_ids(batch.image_ids)
            sim_i2t = sim_t2i = None
            if self.itm_cfg["negatives"] == "hard":
                scale = self.temperature().detach()
                text_all, image_all = all_gather_no_grad(text_feat.detach()), all_gather_no_grad(image_feat.detach())
                sim_i2t, sim_t2i = scale * image_feat.detach() @ text_all.T, scale * text_feat.detach() @ image_all.T  # [B, G]
            text_for_image = sample_negative_partners(batch.image_ids, sim_i2t, column_ids=ids_all)  # a negative text per image
            image_for_text = sample_negative_partners(batch.image_ids, sim_t2i, column_ids=ids_all)  # a negative image per text
        texts_all, masks_all = all_gather_tokens(text.tokens, text.mask)  # [G, L, D], [G, L]
        images_all = all_gather_tokens(image_tokens, torch.ones(image_tokens.shape[:2], dtype=torch.long, device=self.device))[0]
        width = texts_all.shape[1]
        local_texts = F.pad(text.tokens, (0, 0, 0, width - text.tokens.shape[1]))
        local_masks = F.pad(text.mask, (0, width - text.mask.shape[1]))
        has_t, has_i = text_for_image >= 0, image_for_text >= 0  # rows without any negative (one image in the batch) are left out
        fused = self.fusion(
            torch.cat([local_texts, texts_all[text_for_image[has_t]], local_texts[has_i]]),
            torch.cat([local_masks, masks_all[text_for_image[has_t]], local_masks[has_i]]),
            torch.cat([image_tokens, image_tokens[has_t], images_all[image_for_text[has_i]]]),
            prepared=True,
        )
        logits = self.itm_head(fused.pooled)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=self.device)
        labels[:b] = 1
        return {"itm": F.cross_entropy(logits.float(), labels), "itm_acc": (logits.argmax(1) == labels).float().mean()}

    def _mlm(self, batch: ImageTextBatch, image: EncoderOutput, momentum_image: Optional[EncoderOutput], alpha: float) -> Dict[str, Tensor]:
        masked = self.masker(batch.input_ids, batch.attention_mask)
        chosen = masked.labels != -100
        target = masked.labels[chosen]
        out = self.fuse(self.text_encoder(masked.input_ids, batch.attention_mask), image.tokens)
        if target.numel() == 0:  # nothing masked on this rank: a zero loss that still reaches the head (DDP)
            zero = self.mlm_head(out.text_tokens[:, 0]).sum() * 0.0
            return {"mlm": zero, "mlm_acc": zero.detach()}
        logits = self.mlm_head(out.text_tokens[chosen])  # [M, V]
        logits_m = None
        if momentum_image is not None and alpha > 0 and "mlm_head" in self.momentum.names:
            with torch.no_grad():
                text_m = self.momentum["text_encoder"](masked.input_ids, batch.attention_mask)
                fused_m = self.momentum["fusion"](text_m.tokens, text_m.mask, momentum_image.tokens)
                logits_m = self.momentum["mlm_head"](fused_m.text_tokens[chosen])
        loss = mlm_distillation_loss(logits, target, logits_m, alpha)
        return {"mlm": loss, "mlm_acc": (logits.argmax(1) == target).float().mean()}

    def forward(self, batch: ImageTextBatch) -> Dict[str, Tensor]:
        """Weighted sum of the enabled objectives (``loss``) and every term, on a paired batch."""
        if not batch.is_paired:
            raise ValueError("model=albef trains on paired batches (row i of the images and captions is a pair)")
        terms: Dict[str, Tensor] = {}
        alpha = self.current_alpha()
        needs_pairs = self.weights["itc"] > 0 or self.weights["itm"] > 0 or self.weights["mlm"] > 0
        image = self.image_encoder(batch.images) if needs_pairs else None
        text = self.text_encoder(batch.input_ids, batch.attention_mask) if self.weights["itc"] > 0 or self.weights["itm"] > 0 else None
        image_feat = text_feat = None
        if self.weights["itc"] > 0:  # (hard ITM negatives need itc, checked at construction)
            image_feat, text_feat = self.image_proj(image.pooled), self.text_proj(text.pooled)
        momentum_image = None
        if self.momentum is not None and needs_pairs:
            with torch.no_grad():
                momentum_image = self.momentum["image_encoder"](batch.images)
        if self.weights["itc"] > 0:
            terms.update(self._itc(batch, image_feat, text_feat, momentum_image, alpha))
        if self.weights["itm"] > 0:
            terms.update(self._itm(batch, image, text, image_feat, text_feat))
        if self.weights["mlm"] > 0:
            terms.update(self._mlm(batch, image, momentum_image, alpha))
        if self.weights["vqa"] > 0:
            if batch.question_input_ids is None:
                raise ConfigError("model.objectives.vqa > 0 needs questions in the training batches: set data.train_questions=true")
            logits, soft = self.vqa_logits(batch)
            terms["vqa"] = vqa_loss(logits.float(), soft.float())
        terms["loss"] = sum(self.weights[k] * terms[k] for k in OBJECTIVES if self.weights[k] > 0)
        return terms

    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.momentum is not None:
            self.log("train/alpha", self.current_alpha(), batch_size=batch.num_images)
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.momentum is not None:
            self.momentum.update(self._momentum_sources())
