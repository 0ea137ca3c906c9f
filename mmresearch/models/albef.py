"""ALBEF-style align-then-fuse model (Li et al., 2021, "Align before Fuse").

An image encoder (timm) and a text encoder (the first ``text_layers`` layers of a BERT-style
model) are aligned by a contrastive loss (ITC) before a fusion encoder (the remaining layers, with
cross-attention from text to image tokens) is trained on image-text matching (ITM) and masked
language modelling (MLM). The objectives it trains come from ``model.objectives``
(:mod:`mmresearch.modules.objectives`):

- ``itc`` (:class:`MomentumContrastiveObjective`): online features against the momentum features of the whole batch (all ranks) and a
  queue of earlier ones, with soft targets ``alpha * softmax(momentum similarities) + (1 -
  alpha) * ground truth`` (momentum distillation); image ids make every caption of an image a
  positive. ``alpha`` ramps linearly from 0 over the first epoch (``distill.warmup_steps``).
- ``itm`` (:class:`BatchNegativesITMObjective`): matched / not matched on the fused [CLS]: every pair, plus for each image one negative
  text and for each text one negative image drawn from the softmax of the ITC similarities over
  the batch of every rank, never a positive (``itm.negatives=hard``; ``random``: uniform).
- ``mlm`` (:class:`MLMObjective`, ``distill: true``): masked language modelling through the
  fusion encoder, distilled from the momentum model's predictions with the same ``alpha``.
- ``vqa`` (:class:`VQAObjective`): a classifier over the answer vocabulary on the fused [CLS] (soft-score BCE).

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
from torch import Tensor, nn

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.fused_retrieval import PairScorer
from mmresearch.evaluation.pair_store import EvalPairs
from mmresearch.evaluation.vqa import one_hot_soft_scores
from mmresearch.models.fused_base import FusedVisionLanguageModule, checked_options
from mmresearch.modules.encoders.outputs import EncoderOutput
from mmresearch.modules.fusion_heads import ITMHead, MLMHead, VQAHead
from mmresearch.modules.fusions import cross_attention
from mmresearch.modules.fusions.cross_attention import CrossAttentionFusion, load_bert_layer
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.momentum import MomentumCopy
from mmresearch.modules.objectives.base import Objective, StepOutputs, trained_objectives
from mmresearch.modules.queues import FeatureQueue
from mmresearch.utils.errors import ConfigError

log = logging.getLogger(__name__)

class ALBEF(FusedVisionLanguageModule):
    """Align-then-fuse vision-language model.

    Args:
        image_encoder: a :class:`TimmImageEncoder` (ViT or CNN): its pooled output feeds ITC, its
            tokens (patches, or the cells of a CNN feature map) the fusion's cross-attention.
        text_encoder: a :class:`HFTextEncoder` around a BERT-style model.
        objectives: ``name -> Objective`` (config ``model.objectives``; weight 0: not trained):
            ``itc`` (with its temperature, config group ``temperature``), ``itm``, ``mlm``, ``vqa``.
        optimizer, scheduler: see :class:`MultimodalModule`.
        tokenizer: the data's tokenizer (MLM needs its mask token and vocabulary).
        num_answers: size of the VQA answer vocabulary (filled from the data).
        distill: ``alpha`` (0.4; 0 = no distillation) and ``warmup_steps`` over which it ramps up
            from 0 (null: one epoch): the momentum distillation of ``itc`` and of ``mlm`` with
            ``distill: true``.
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

    unused_group_notes = {"loss": "its contrastive objective model.objectives.itc is ALBEF's own loss against momentum "
                                  "features and a queue (options under model.objectives.itc and model.distill)"}

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        objectives: Mapping[str, Objective],
        optimizer: Callable,
        scheduler: Optional[Callable] = None,
        tokenizer: Any = None,
        num_answers: Optional[int] = None,
        distill: Optional[Mapping[str, Any]] = None,
        retrieval: Optional[Mapping[str, Any]] = None,
        text_layers: Optional[int] = None,
        fusion_layers: int = 6,
        image_positions: Any = "auto",
        embed_dim: int = 256,
        momentum: float = 0.995,
        queue_size: int = 65536,
        init_from: Optional[str] = None,
        init_from_min_share: float = 0.5,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, tokenizer=tokenizer, retrieval=retrieval)
        active = trained_objectives(objectives)
        self.distill_cfg = checked_options(distill, ("alpha", "warmup_steps"), "model.distill")
        alpha = self.distill_cfg["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"model.distill.alpha must be in [0, 1], got {alpha!r}")

        for key, encoder in (("image_encoder", image_encoder), ("text_encoder", text_encoder)):
            if not hasattr(encoder, "output"):
                raise ConfigError(f"model=albef needs token features from {key} ({type(encoder).__name__} has no `output` switch)")
            encoder.output = "both"
        hf = getattr(text_encoder, "model", None)
        if hf is None or not hasattr(hf, "config"):
            raise ConfigError("model=albef needs a Hugging Face BERT-style text_encoder (mmresearch.modules.encoders.text.HFTextEncoder)")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder

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
        self.mlm_head = None
        if "mlm" in active:
            self.mlm_head = MLMHead(d, int(hc.vocab_size), tied_embeddings=hf.get_input_embeddings())
        if "vqa" in active:
            if not num_answers:
                raise ConfigError("model.objectives.vqa needs model.num_answers (filled from the data's answer vocabulary)")
            self.vqa_head = VQAHead(d, int(num_answers))
        # parts no objective trains get no gradient (DDP needs every trained parameter used)
        if "itc" not in active:
            for module in (self.image_proj, self.text_proj):
                module.requires_grad_(False)
        if "itm" not in active:
            self.itm_head.requires_grad_(False)
        if not any(k in active for k in ("itm", "mlm", "vqa")):
            self.fusion.requires_grad_(False)  # ITC alone

        # -- momentum model and queue -----------------------------------------------------------
        self.distills_mlm = "mlm" in active and bool(getattr(active["mlm"], "distill", False)) and alpha > 0
        self.momentum = self.queue = None
        if "itc" in active or self.distills_mlm:
            self.momentum = MomentumCopy(self._momentum_sources(), momentum=momentum)
        if "itc" in active and queue_size:
            self.queue = FeatureQueue(int(queue_size), int(embed_dim))
        # identical on every rank by construction (every rank enqueues the same gathered rows):
        # DDP does not broadcast the queue at every forward. The momentum weights get no
        # gradient (never reduced) and are broadcast once when DDP wraps the model.
        self._ddp_params_and_buffers_to_ignore = [f"queue.{n}" for n, _ in self.queue.named_buffers()] if self.queue else []
        self.register_objectives(objectives)

        self.configure_pair_stores(int(getattr(hc, "max_position_embeddings", 512)), tokenizer)
        if init_from:
            # the queue holds another run's features and image ids (false positives here)
            loaded = self.load_matching_weights(init_from, skip=("queue.",), min_share=init_from_min_share, derived=("momentum.",))
            if self.momentum is not None and not any(k.startswith("momentum.") for k in loaded):
                self.momentum = MomentumCopy(self._momentum_sources(), momentum=momentum)  # start from the loaded weights

    @property
    def has_embeddings(self) -> bool:
        """The ITC projections are trained (retrieval first stage, zero-shot, probes)."""
        return "itc" in self.objectives

    def _momentum_sources(self) -> Dict[str, nn.Module]:
        """The online modules the momentum model follows."""
        sources = {"image_encoder": self.image_encoder, "image_proj": self.image_proj, "text_encoder": self.text_encoder, "text_proj": self.text_proj}
        if self.distills_mlm:
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

    # -- training: what the objectives use -----------------------------------------------------------
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

    def step_outputs(self, batch: ImageTextBatch) -> StepOutputs:
        """The unimodal encoders' outputs (pooled and tokens) of the batch, the ITC embeddings, the
        momentum image encoder's output and this step's distillation weight."""
        if not batch.is_paired:
            raise ValueError("model=albef trains on paired batches (row i of the images and captions is a pair)")
        outputs = StepOutputs(alpha=self.current_alpha())
        needs_pairs = any(k in self.objectives for k in ("itc", "itm", "mlm"))
        if needs_pairs:
            outputs.encoded["image"] = self.image_encoder(batch.images)
        if "itc" in self.objectives or "itm" in self.objectives:
            outputs.encoded["text"] = self.text_encoder(batch.input_ids, batch.attention_mask)
        if "itc" in self.objectives:
            outputs.embeddings["image"] = self.image_proj(outputs.encoded["image"].pooled)
            outputs.embeddings["text"] = self.text_proj(outputs.encoded["text"].pooled)
        if self.momentum is not None and needs_pairs:
            with torch.no_grad():
                outputs.momentum_encoded["image"] = self.momentum["image_encoder"](batch.images)
        return outputs

    def momentum_embeddings(self, batch: ImageTextBatch, outputs: StepOutputs) -> tuple[Tensor, Tensor]:
        """``([B, E], [B, E])`` the momentum model's ITC embeddings of the batch (no gradient)."""
        with torch.no_grad():
            image = self.momentum["image_proj"](outputs.momentum_encoded["image"].pooled)
            text = self.momentum["text_proj"](self.momentum["text_encoder"](batch.input_ids, batch.attention_mask).pooled)
        return image, text

    def prepare_image_tokens(self, tokens: Tensor) -> Tensor:
        """``[B, N, D_img] -> [B, N, D]`` image tokens as the fusion layers take them."""
        return self.fusion.prepare_image(tokens)

    def fused_itm_logits(self, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor) -> Tensor:
        """``[P, 2]`` ITM logits of pairs of encoded captions and prepared image tokens."""
        return self.itm_head(self.fusion(text_tokens, text_mask, image_tokens, prepared=True).pooled)

    def mlm_text_states(self, batch: ImageTextBatch, masked_input_ids: Tensor, outputs: StepOutputs) -> Tensor:
        """``[B, L, D]`` the fusion's states of the masked captions with the batch's image tokens."""
        return self.fuse(self.text_encoder(masked_input_ids, batch.attention_mask), outputs.encoded["image"].tokens).text_tokens

    def mlm_momentum_logits(self, batch: ImageTextBatch, masked_input_ids: Tensor, chosen: Tensor, outputs: StepOutputs) -> Optional[Tensor]:
        """``[M, V]`` the momentum model's predictions at the masked positions, or None without a
        momentum fusion and MLM head."""
        if self.momentum is None or "mlm_head" not in self.momentum.names or "image" not in outputs.momentum_encoded:
            return None
        with torch.no_grad():
            text_m = self.momentum["text_encoder"](masked_input_ids, batch.attention_mask)
            fused_m = self.momentum["fusion"](text_m.tokens, text_m.mask, outputs.momentum_encoded["image"].tokens)
            return self.momentum["mlm_head"](fused_m.text_tokens[chosen])

    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.momentum is not None:
            self.log("train/alpha", self.current_alpha(), batch_size=batch.num_images)
        return loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.momentum is not None:
            self.momentum.update(self._momentum_sources())
