"""What the fused model families (ViLT-style, ALBEF-style) share: evaluation by image-text
matching and VQA, option merging and initialisation from another run's checkpoint.

A fused model scores an image-caption pair jointly (``itm_logits``), so retrieval cannot be a
single matrix product. Evaluation collects the split's raw images and captions
(:class:`PairStore`), lets a cheap first stage pick the top-k candidates per query, and fuses only
those (:func:`fused_retrieval`). The same ITM scores give ITM accuracy and the compositionality
probe; a VQA head gives the VQA score. Metric names are the dual encoder's (``val/rsum``,
``test/t2i_R@1``...), plus ``test/first_stage/*``, ``test/pairs_scored``, ``test/itm_acc`` and
``test/vqa_score``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from torch import Tensor

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.compositionality import _caption_rows, wins_from_scores
from mmresearch.evaluation.fused_retrieval import PairScorer, fused_retrieval
from mmresearch.evaluation.pair_store import EvalPairs, PairStore
from mmresearch.evaluation.retrieval import retrieval_metrics_from_scores
from mmresearch.evaluation.vqa import VQAScore
from mmresearch.models.base import VisionLanguageModule
from mmresearch.modules.itm_negatives import sample_negative_partners
from mmresearch.modules.masking import MLMMasker
from mmresearch.utils.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_RETRIEVAL = {"enabled": True, "first_stage": "self", "top_k": 16, "batch_size": 256, "max_full_pairs": 250_000}


def merged_options(defaults: Mapping[str, Any], given: Optional[Mapping[str, Any]], key: str) -> Dict[str, Any]:
    """``defaults`` updated with ``given``; an unknown key is a :class:`ConfigError` naming ``key``."""
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ConfigError(f"{key}: unknown keys {sorted(unknown)}; allowed: {sorted(defaults)}")
    return {**defaults, **given}


def objective_weights(defaults: Mapping[str, float], given: Optional[Mapping[str, float]]) -> Dict[str, float]:
    """Loss weights ``model.objectives`` over ``defaults``; at least one must be positive."""
    weights = {k: float(v) for k, v in merged_options(defaults, given, "model.objectives").items()}
    if not any(w > 0 for w in weights.values()):
        raise ConfigError(f"model.objectives: at least one of {list(defaults)} needs a weight > 0, got {weights}")
    return weights


def mlm_masker(tokenizer: Any, options: Mapping[str, Any]) -> MLMMasker:
    """The MLM masker of ``model.mlm`` options (``probability``, ``mask_replace_prob``,
    ``random_replace_prob``, ``whole_word``)."""
    if tokenizer is None:
        raise ConfigError("model.objectives.mlm > 0 needs the tokenizer (passed by the model builder)")
    return MLMMasker(
        tokenizer,
        probability=options["probability"],
        mask_replace_prob=options["mask_replace_prob"],
        random_replace_prob=options["random_replace_prob"],
        whole_word=bool(options["whole_word"]),
    )


class FusedVisionLanguageModule(VisionLanguageModule):
    """Base of models with a fusion encoder and an ITM head.

    Subclasses set ``itm_head`` and implement :meth:`fused_pooled` and, with a VQA head,
    :meth:`vqa_logits`; they may
    override :meth:`pair_scorer` to reuse unimodal features across the candidate pairs.

    Args:
        retrieval: ``enabled``; ``first_stage`` (``self``: the model's own contrastive
            embeddings; ``none``: fuse every pair; or a dual-encoder checkpoint path);
            ``top_k`` candidates per query; ``batch_size`` pairs fused at once;
            ``max_full_pairs`` (without a first stage, refuse to fuse more pairs).
        optimizer, scheduler, eval_chunk_size: see :class:`VisionLanguageModule`.
    """

    #: whether the ITM head is trained in this run (no ITM metrics otherwise); set by subclasses
    trains_itm = True

    def __init__(
        self,
        optimizer: Callable,
        scheduler: Optional[Callable] = None,
        retrieval: Optional[Mapping[str, Any]] = None,
        eval_chunk_size: Optional[int] = 1024,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, eval_chunk_size=eval_chunk_size)
        self.retrieval_cfg = merged_options(DEFAULT_RETRIEVAL, retrieval, "model.retrieval")
        self.val_pairs, self.test_pairs = PairStore(), PairStore()
        self.val_vqa, self.test_vqa = VQAScore(), VQAScore()
        self._itm_counts: Dict[str, Tensor] = {}
        self._first_stage: list = []  # a dual encoder, kept out of the state dict and optimizer
        self.vqa_head = None

    def configure_pair_stores(self, max_text_length: int, tokenizer: Any = None) -> None:
        """Token rows of the collected split are padded to ``max_text_length`` (the text model's
        positions) with the tokenizer's padding id."""
        pad_id = getattr(tokenizer, "pad_token_id", 0) or 0
        for store in (self.val_pairs, self.test_pairs):
            store.max_length, store.pad_token_id = int(max_text_length), int(pad_id)

    # -- to implement ---------------------------------------------------------------------------
    def fused_pooled(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B, 3, H, W], [B, L], [B, L] -> [B, D]`` the joint representation of the pairs."""
        raise NotImplementedError

    def itm_logits(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B, 3, H, W], [B, L], [B, L] -> [B, 2]`` matching logits (column 1 = matched)."""
        return self.itm_head(self.fused_pooled(images, input_ids, attention_mask))

    def vqa_logits(self, batch: ImageTextBatch) -> tuple[Tensor, Tensor]:
        """``(logits [B * Q, A], soft targets [B * Q, A])`` for the batch's questions."""
        raise NotImplementedError

    def pair_scorer(self, pairs: EvalPairs) -> PairScorer:
        """``(image rows [P], text rows [P]) -> [P]`` ITM match scores of pairs of the split."""

        def score(image_rows: Tensor, text_rows: Tensor) -> Tensor:
            image_rows, text_rows = image_rows.to(self.device), text_rows.to(self.device)
            ids, mask = pairs.input_ids[text_rows], pairs.attention_mask[text_rows]
            width = max(int(mask.sum(1).max()), 1)
            return self.itm_head.score(self.fused_pooled(pairs.images[image_rows], ids[:, :width], mask[:, :width]))

        return score

    # -- initialisation from another run ---------------------------------------------------------
    def load_matching_weights(self, path: str, skip: tuple = ()) -> Dict[str, Tensor]:
        """Initialise from a checkpoint (file or run directory): every tensor whose name and shape
        match is loaded, the rest (new heads) keep their initialisation (``model.init_from``).
        Names starting with a prefix in ``skip`` are not loaded. Returns what was loaded."""
        from mmresearch.utils.checkpoint import load_checkpoint

        state = {k: v for k, v in load_checkpoint(path)["state_dict"].items() if not k.startswith(skip)}
        own = self.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ConfigError(f"model.init_from={path}: no parameter of the checkpoint matches this model")
        result = self.load_state_dict(usable, strict=False)
        skipped = sorted(set(state) - set(usable))
        log.info("model.init_from=%s: %d tensors loaded; new (kept initialised): %s; skipped: %s", path, len(usable), result.missing_keys[:10], skipped[:10])
        return usable

    # -- evaluation --------------------------------------------------------------------------------
    def _eval_step(self, batch: ImageTextBatch, stage: str) -> None:
        pairs: PairStore = getattr(self, f"{stage}_pairs")
        text_ids = batch.text_ids if batch.text_ids is not None else torch.arange(batch.num_texts, device=self.device)
        if self.retrieval_cfg["enabled"]:
            pairs.update(batch.images, batch.image_ids, batch.input_ids, batch.attention_mask, batch.text_image_ids, text_ids)
        if self.vqa_head is not None and batch.question_input_ids is not None:
            logits, soft = self.vqa_logits(batch)
            getattr(self, f"{stage}_vqa").update(logits.float(), soft.float())
        if not self.trains_itm:
            return  # the ITM head is not trained in this run (e.g. VQA fine-tuning): no ITM metrics
        rows = _caption_rows(batch.image_ids, batch.text_image_ids)
        pos = self.itm_head.score(self.fused_pooled(batch.images[rows], batch.input_ids, batch.attention_mask))  # [T]
        partner = sample_negative_partners(batch.text_image_ids)  # a caption of another image per caption
        has = partner >= 0
        neg = self.itm_head.score(self.fused_pooled(batch.images[rows[has]], batch.input_ids[partner[has]], batch.attention_mask[partner[has]]))
        counts = self._itm_counts.setdefault(stage, torch.zeros(4, device=self.device))
        counts += torch.stack([(pos > 0).sum(), torch.tensor(pos.numel(), device=self.device), (neg <= 0).sum(), torch.tensor(neg.numel(), device=self.device)]).float()
        if batch.neg_input_ids is not None and batch.neg_kinds is not None:
            hard = self.itm_head.score(self.fused_pooled(batch.images, batch.neg_input_ids, batch.neg_attention_mask))
            getattr(self, f"{stage}_compositionality").update(batch.image_ids, wins_from_scores(pos, rows, hard), batch.neg_kinds)

    def validation_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _first_stage_scores(self, pairs: EvalPairs) -> Optional[Tensor]:
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
        width = max(int(pairs.attention_mask.sum(1).max()), 1)  # the store pads to the model's positions
        ids, mask = pairs.input_ids[:, :width], pairs.attention_mask[:, :width]
        img = torch.cat([embed_images(pairs.images[i : i + n]).float() for i in range(0, pairs.images.shape[0], n)])
        txt = torch.cat([embed_texts(ids[i : i + n], mask[i : i + n]).float() for i in range(0, ids.shape[0], n)])
        return (txt @ img.T).cpu()

    def _fused_retrieval(self, pairs: EvalPairs, first: Optional[Tensor]) -> Dict[str, float]:
        """First stage + ITM rerank over the collected split, sharded over the DDP ranks."""
        world, rank = self.trainer.world_size, self.trainer.global_rank

        def reduce(t: Tensor) -> Tensor:
            t = t.to(self.device)
            torch.distributed.all_reduce(t)
            return t.cpu()

        result = fused_retrieval(
            self.pair_scorer(pairs),
            num_images=pairs.images.shape[0],
            text_to_image=pairs.text_to_image.cpu(),
            first_stage=first,
            top_k=int(self.retrieval_cfg["top_k"]),
            batch_size=int(self.retrieval_cfg["batch_size"]),
            max_full_pairs=int(self.retrieval_cfg["max_full_pairs"]),
            shard=(rank, world),
            reduce=reduce if world > 1 and torch.distributed.is_initialized() else None,
        )
        values = dict(result.metrics, pairs_scored=float(result.pairs_scored))
        if result.first_stage_metrics:
            values.update({f"first_stage/{k}": v for k, v in result.first_stage_metrics.items()})
        return values

    def _epoch_end(self, stage: str) -> None:
        values: Dict[str, float] = {}
        pairs_metric: PairStore = getattr(self, f"{stage}_pairs")
        if pairs_metric.update_count and self.retrieval_cfg["enabled"]:
            pairs = pairs_metric.compute()
            pairs_metric.reset()
            first = self._first_stage_scores(pairs)
            if first is not None and not self.trains_itm:
                # an untrained ITM head would rerank at random: the first stage alone is the result
                values.update(retrieval_metrics_from_scores(first, first.T, pairs.text_to_image.cpu()))
            else:
                values.update(self._fused_retrieval(pairs, first))
        counts = self._itm_counts.pop(stage, None)
        if counts is not None:
            counts = self.all_gather(counts).reshape(-1, 4).sum(0) if self.trainer.world_size > 1 else counts
            values["itm_acc"] = float(0.5 * (counts[0] / counts[1].clamp_min(1) + counts[2] / counts[3].clamp_min(1)))
        compositionality = getattr(self, f"{stage}_compositionality")
        if compositionality.update_count:
            values.update(compositionality.compute())
            compositionality.reset()
        vqa: VQAScore = getattr(self, f"{stage}_vqa")
        if vqa.update_count:
            values["vqa_score"] = float(vqa.compute())
            vqa.reset()
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
