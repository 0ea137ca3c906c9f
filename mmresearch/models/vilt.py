"""ViLT-style single-stream fused model (Kim et al., 2021): ITM, MLM, VQA, fused retrieval.

Image patches and word tokens go through one transformer (:class:`SingleStreamEncoder`). The
objectives are switched on and weighted by ``objectives`` (config ``model.objectives``):

- ``itm``: matched / not matched on the pooled output; with probability ``itm.negative_ratio`` a
  pair's image (or text, ``itm.replace``) is replaced by one of another image of the batch:
  uniformly (``itm.negatives=random``) or drawn from the softmax of first-stage similarities
  (``hard``; the model's own unimodal contrastive scores).
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
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.compositionality import CompositionalityMetric, _caption_rows, wins_from_scores
from mmresearch.evaluation.fused_retrieval import fused_retrieval
from mmresearch.evaluation.pair_store import PairStore
from mmresearch.evaluation.vqa import VQAScore, one_hot_soft_scores, vqa_loss
from mmresearch.models.base import VisionLanguageModule
from mmresearch.modules.fusion_heads import ITMHead, MLMHead, VQAHead
from mmresearch.modules.fusions.single_stream import SingleStreamEncoder
from mmresearch.modules.heads import ProjectionHead
from mmresearch.modules.itm_negatives import sample_negative_partners
from mmresearch.modules.masking import MLMMasker
from mmresearch.utils.errors import ConfigError, check_choice

log = logging.getLogger(__name__)

OBJECTIVES = ("itm", "mlm", "itc", "vqa")
DEFAULT_OBJECTIVES = {"itm": 1.0, "mlm": 1.0, "itc": 0.0, "vqa": 0.0}
DEFAULT_ITM = {"negatives": "random", "replace": "image", "negative_ratio": 0.5}
DEFAULT_MLM = {"probability": 0.15, "whole_word": True, "mask_replace_prob": 0.8, "random_replace_prob": 0.1}
DEFAULT_RETRIEVAL = {"enabled": True, "first_stage": "self", "top_k": 16, "batch_size": 256, "max_full_pairs": 250_000}


def _merged(defaults: Mapping[str, Any], given: Optional[Mapping[str, Any]], key: str) -> Dict[str, Any]:
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ConfigError(f"{key}: unknown keys {sorted(unknown)}; allowed: {sorted(defaults)}")
    return {**defaults, **given}


class ViLT(VisionLanguageModule):
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
        eval_chunk_size: Optional[int] = 1024,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, eval_chunk_size=eval_chunk_size)
        self.weights = {k: float(v) for k, v in _merged(DEFAULT_OBJECTIVES, objectives, "model.objectives").items()}
        if not any(w > 0 for w in self.weights.values()):
            raise ConfigError(f"model.objectives: at least one of {list(OBJECTIVES)} needs a weight > 0, got {self.weights}")
        self.itm_cfg = _merged(DEFAULT_ITM, itm, "model.itm")
        check_choice("model.itm.negatives", self.itm_cfg["negatives"], ("random", "hard"))
        check_choice("model.itm.replace", self.itm_cfg["replace"], ("image", "text"))
        self.mlm_cfg = _merged(DEFAULT_MLM, mlm, "model.mlm")
        self.retrieval_cfg = _merged(DEFAULT_RETRIEVAL, retrieval, "model.retrieval")
        if self.itm_cfg["negatives"] == "hard" and self.weights["itc"] <= 0:
            raise ConfigError("model.itm.negatives=hard samples from the model's contrastive scores: set model.objectives.itc > 0")

        self.encoder = SingleStreamEncoder(image_encoder, text_encoder, max_image_tokens=max_image_tokens, pooling=pooling)
        d = self.encoder.hidden_size
        self.itm_head = ITMHead(d)
        tied = self.encoder.word_embeddings if isinstance(self.encoder.text_proj, nn.Identity) else None
        self.mlm_head = MLMHead(d, self.encoder.vocab_size, tied_embeddings=tied) if self.weights["mlm"] > 0 else None
        self.masker = None
        if self.weights["mlm"] > 0:
            if tokenizer is None:
                raise ConfigError("model=vilt with objectives.mlm > 0 needs the tokenizer (passed by the model builder)")
            self.masker = MLMMasker(
                tokenizer,
                probability=self.mlm_cfg["probability"],
                mask_replace_prob=self.mlm_cfg["mask_replace_prob"],
                random_replace_prob=self.mlm_cfg["random_replace_prob"],
                whole_word=bool(self.mlm_cfg["whole_word"]),
            )
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

        pad_id = getattr(tokenizer, "pad_token_id", 0) or 0
        self.val_pairs = PairStore(max_length=self.encoder.max_text_positions, pad_token_id=pad_id)
        self.test_pairs = PairStore(max_length=self.encoder.max_text_positions, pad_token_id=pad_id)
        self.val_vqa, self.test_vqa = VQAScore(), VQAScore()
        self._itm_counts: Dict[str, Tensor] = {}
        self._first_stage: list = []  # a dual encoder, kept out of the state dict and optimizer
        if init_from:
            self._init_from(init_from)

    # ------------------------------------------------------------------------------------------
    def _init_from(self, path: str) -> None:
        from mmresearch.utils.checkpoint import load_checkpoint

        state = load_checkpoint(path)["state_dict"]
        own = self.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        result = self.load_state_dict(usable, strict=False)
        skipped = sorted(set(state) - set(usable))
        log.info("model.init_from=%s: %d tensors loaded; new (kept initialised): %s; skipped: %s", path, len(usable), result.missing_keys[:10], skipped[:10])
        if not usable:
            raise ConfigError(f"model.init_from={path}: no parameter of the checkpoint matches this model")

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
    def itm_logits(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B, 3, H, W], [B, L], [B, L] -> [B, 2]`` matching logits of the pairs."""
        return self.itm_head(self.encoder(images, input_ids, attention_mask).pooled)

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

    def _vqa_logits(self, batch: ImageTextBatch) -> tuple[Tensor, Tensor]:
        b, q, length = batch.question_input_ids.shape
        images = batch.images.repeat_interleave(q, dim=0)
        out = self.encoder(images, batch.question_input_ids.reshape(b * q, length), batch.question_attention_mask.reshape(b * q, length))
        logits = self.vqa_head(out.pooled)
        return logits, one_hot_soft_scores(batch.answers.reshape(-1), logits.shape[1]).to(logits.dtype)

    def _itc(self, batch: ImageTextBatch) -> tuple[Dict[str, Tensor], Tensor]:
        image_emb = self.embed_images(batch.images)
        text_emb = self.embed_texts(batch.input_ids, batch.attention_mask)
        terms = self.loss(image_emb, text_emb, self.temperature(), batch.image_ids, batch.text_image_ids)
        return {f"itc_{k}" if k != "loss" else "itc": v for k, v in terms.items()}, (text_emb @ image_emb.T).detach()

    def forward(self, batch: ImageTextBatch) -> Dict[str, Tensor]:
        """Weighted sum of the enabled objectives (``loss``) and every term, on a paired batch."""
        terms: Dict[str, Tensor] = {}
        similarity = None
        if self.weights["itc"] > 0:
            itc_terms, similarity = self._itc(batch)
            terms.update(itc_terms)
        if self.weights["itm"] > 0:
            sim = similarity if self.itm_cfg["negatives"] == "hard" else None  # [texts, images]
            if sim is not None and self.itm_cfg["replace"] == "text":
                sim = sim.T  # a text partner per image (replace=image: an image partner per text)
            terms.update(self._itm_loss(batch, sim))
        if self.weights["mlm"] > 0:
            terms.update(self._mlm_loss(batch))
        if self.weights["vqa"] > 0:
            if batch.question_input_ids is None:
                raise ConfigError("model.objectives.vqa > 0 needs questions in the training batches: set data.train_questions=true")
            logits, soft = self._vqa_logits(batch)
            terms["vqa"] = vqa_loss(logits.float(), soft.float())
        terms["loss"] = sum(self.weights[k] * terms[k] for k in OBJECTIVES if self.weights[k] > 0 and k in terms)
        return terms

    def on_train_batch_start(self, batch: ImageTextBatch, batch_idx: int) -> None:
        if self.temperature is not None:
            self.temperature.step(self.global_step)

    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> Tensor:
        terms = self(batch)
        self.check_finite(terms)
        self.log_terms(terms, "train", batch.num_images)
        return terms["loss"]

    def on_train_batch_end(self, outputs, batch: ImageTextBatch, batch_idx: int) -> None:
        if self.temperature is not None:
            self.temperature.clamp_()

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_step(self, batch: ImageTextBatch, stage: str) -> None:
        pairs: PairStore = getattr(self, f"{stage}_pairs")
        text_ids = batch.text_ids if batch.text_ids is not None else torch.arange(batch.num_texts, device=self.device)
        if self.retrieval_cfg["enabled"]:
            pairs.update(batch.images, batch.image_ids, batch.input_ids, batch.attention_mask, batch.text_image_ids, text_ids)
        if self.vqa_head is not None and batch.question_input_ids is not None:
            logits, soft = self._vqa_logits(batch)
            getattr(self, f"{stage}_vqa").update(logits.float(), soft.float())
        if self.weights["itm"] <= 0 and not self.retrieval_cfg["enabled"]:
            return  # the ITM head is not trained in this run (e.g. VQA fine-tuning): no ITM metrics
        rows = _caption_rows(batch.image_ids, batch.text_image_ids)
        pos = ITMHead.match_score(self.itm_logits(batch.images[rows], batch.input_ids, batch.attention_mask))  # [T]
        partner = sample_negative_partners(batch.text_image_ids)  # a caption of another image per caption
        has = partner >= 0
        neg = ITMHead.match_score(self.itm_logits(batch.images[rows[has]], batch.input_ids[partner[has]], batch.attention_mask[partner[has]]))
        counts = self._itm_counts.setdefault(stage, torch.zeros(4, device=self.device))
        counts += torch.stack([(pos > 0).sum(), torch.tensor(pos.numel(), device=self.device), (neg <= 0).sum(), torch.tensor(neg.numel(), device=self.device)]).float()
        if batch.neg_input_ids is not None and batch.neg_kinds is not None:
            hard = ITMHead.match_score(self.itm_logits(batch.images, batch.neg_input_ids, batch.neg_attention_mask))
            getattr(self, f"{stage}_compositionality").update(batch.image_ids, wins_from_scores(pos, rows, hard), batch.neg_kinds)

    def validation_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _first_stage_scores(self, pairs) -> Optional[Tensor]:
        """``[N_t, N_i]`` cheap scores per the ``retrieval.first_stage`` setting, or None."""
        choice = self.retrieval_cfg["first_stage"]
        if choice in (None, "none"):
            return None
        if choice == "self":
            if not self.has_embeddings:
                return None  # no unimodal projections: every pair is fused
            embed_images, embed_texts = self.embed_images, self.embed_texts
        else:
            if not self._first_stage:
                from mmresearch.utils.checkpoint import load_model

                model = load_model(choice)[0]
                self._first_stage.append(model.to(self.device).eval())
            embed_images, embed_texts = self._first_stage[0].embed_images, self._first_stage[0].embed_texts
        n = self.retrieval_cfg["batch_size"]
        img = torch.cat([embed_images(pairs.images[i : i + n]).float() for i in range(0, pairs.images.shape[0], n)])
        txt = torch.cat([embed_texts(pairs.input_ids[i : i + n], pairs.attention_mask[i : i + n]).float() for i in range(0, pairs.input_ids.shape[0], n)])
        return (txt @ img.T).cpu()

    def _score_pairs(self, pairs) -> Callable[[Tensor, Tensor], Tensor]:
        def score(image_rows: Tensor, text_rows: Tensor) -> Tensor:
            image_rows, text_rows = image_rows.to(self.device), text_rows.to(self.device)
            ids, mask = pairs.input_ids[text_rows], pairs.attention_mask[text_rows]
            width = max(int(mask.sum(1).max()), 1)
            return ITMHead.match_score(self.itm_logits(pairs.images[image_rows], ids[:, :width], mask[:, :width]))

        return score

    def _epoch_end(self, stage: str) -> None:
        values: Dict[str, float] = {}
        pairs_metric: PairStore = getattr(self, f"{stage}_pairs")
        if pairs_metric.update_count and self.retrieval_cfg["enabled"]:
            pairs = pairs_metric.compute()
            pairs_metric.reset()
            first = self._first_stage_scores(pairs)
            world, rank = self.trainer.world_size, self.trainer.global_rank

            def reduce(t: Tensor) -> Tensor:
                t = t.to(self.device)
                torch.distributed.all_reduce(t)
                return t.cpu()

            result = fused_retrieval(
                self._score_pairs(pairs),
                num_images=pairs.images.shape[0],
                text_to_image=pairs.text_to_image.cpu(),
                first_stage=first,
                top_k=int(self.retrieval_cfg["top_k"]),
                batch_size=int(self.retrieval_cfg["batch_size"]),
                max_full_pairs=int(self.retrieval_cfg["max_full_pairs"]),
                shard=(rank, world),
                reduce=reduce if world > 1 and torch.distributed.is_initialized() else None,
            )
            values.update(result.metrics)
            values["pairs_scored"] = float(result.pairs_scored)
            if result.first_stage_metrics:
                values.update({f"first_stage/{k}": v for k, v in result.first_stage_metrics.items()})
        counts = self._itm_counts.pop(stage, None)
        if counts is not None:
            counts = self.all_gather(counts).reshape(-1, 4).sum(0) if self.trainer.world_size > 1 else counts
            values["itm_acc"] = float(0.5 * (counts[0] / counts[1].clamp_min(1) + counts[2] / counts[3].clamp_min(1)))
        for metric in (getattr(self, f"{stage}_compositionality"),):
            if metric.update_count:
                values.update(metric.compute())
                metric.reset()
        vqa: VQAScore = getattr(self, f"{stage}_vqa")
        if vqa.update_count:
            values["vqa_score"] = float(vqa.compute())
            vqa.reset()
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
