"""What the fused model families (ViLT-style, ALBEF-style) share: evaluation by image-text
matching and VQA, option merging and initialisation from another run's checkpoint.

A fused model scores an image-caption pair jointly (``itm_logits``), so retrieval cannot be a
single matrix product. Evaluation collects the split's raw images and captions
(:class:`PairStore`), lets a cheap first stage pick the top-k candidates per query, and fuses only
those (:func:`fused_retrieval`). The same ITM scores give ITM accuracy (every caption with its
image and with another image drawn with a fixed seed) and the compositionality probe; a VQA
head gives the VQA score. A run that does not train the ITM head reports the first stage's
retrieval alone (or none without a first stage) and no ITM metrics. Every metric is computed from
the states of all ranks, each image, caption and question counted once (the distributed
sampler's padding repeats are dropped by id), and the pairs scored do not depend on the batches
or ranks: one process and N ranks report the same values. Metric names are the dual encoder's
(``val/rsum``, ``test/t2i_R@1``...), plus ``test/first_stage/*``, ``test/pairs_scored``,
``test/itm_acc`` and ``test/vqa_score``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from torch import Tensor

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.compositionality import CompositionalityMetric, caption_rows, wins_from_scores
from mmresearch.evaluation.fused_retrieval import PairScorer, fused_retrieval
from mmresearch.evaluation.pair_store import EvalPairs, PairStore
from mmresearch.evaluation.retrieval import retrieval_metrics_from_scores
from mmresearch.evaluation.vqa import VQAScore
from mmresearch.models.base import MultimodalModule
from mmresearch.models.loading import load_model
from mmresearch.models.upgrade import upgrade_state_dict
from mmresearch.utils.checkpoint import load_checkpoint, resolve_checkpoint_path
from mmresearch.utils.distributed import world_info
from mmresearch.utils.errors import ConfigError

log = logging.getLogger(__name__)

#: the keys of ``model.retrieval`` (their values: the model's YAML)
RETRIEVAL_KEYS = ("enabled", "first_stage", "top_k", "batch_size", "max_full_pairs")
#: seed of the unmatched pairs of the ITM accuracy: fixed, so that they are a function of the
#: split alone (the same in every evaluation of every run, whatever its seed or ranks)
ITM_EVAL_SEED = 0


def checked_options(given: Optional[Mapping[str, Any]], keys: tuple, key: str) -> Dict[str, Any]:
    """``given`` with exactly ``keys`` (the defaults are the model's YAML); an unknown or missing
    key is a :class:`ConfigError` naming ``key``."""
    given = dict(given or {})
    unknown, missing = set(given) - set(keys), [k for k in keys if k not in given]
    if unknown or missing:
        raise ConfigError(f"{key}: {'unknown keys ' + str(sorted(unknown)) if unknown else 'missing keys ' + str(missing)}; expected: {list(keys)}")
    return given


class FusedVisionLanguageModule(MultimodalModule):
    """Base of models with a fusion encoder and an ITM head, and their evaluation protocol.

    Subclasses set ``itm_head`` and implement :meth:`fused_pooled` and, with a VQA head,
    :meth:`vqa_logits`; they may
    override :meth:`pair_scorer` to reuse unimodal features across the candidate pairs.

    Args:
        retrieval: ``enabled``; ``first_stage`` (``self``: the model's own contrastive
            embeddings; ``none``: fuse every pair; or a dual-encoder checkpoint path);
            ``top_k`` candidates per query; ``batch_size`` pairs fused at once;
            ``max_full_pairs`` (without a first stage, refuse to fuse more pairs).
        optimizer, scheduler, tokenizer: see :class:`MultimodalModule`.
    """

    objective_order = ("itc", "itm", "mlm", "vqa")  # the ITM's hard negatives read the contrastive scale

    def __init__(
        self,
        optimizer: Callable,
        scheduler: Optional[Callable] = None,
        tokenizer: Any = None,
        retrieval: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, tokenizer=tokenizer)
        self.retrieval_cfg = checked_options(retrieval, RETRIEVAL_KEYS, "model.retrieval")
        self.val_pairs, self.test_pairs = PairStore(), PairStore()
        self.val_vqa, self.test_vqa = VQAScore(), VQAScore()
        self.val_compositionality = CompositionalityMetric(kind_names=())
        self.test_compositionality = CompositionalityMetric(kind_names=())
        self._said_no_retrieval = False
        self._first_stage: list = []  # a dual encoder, kept out of the state dict and optimizer
        self.vqa_head = None

    @property
    def trains_itm(self) -> bool:
        """Whether the ITM head is trained in this run (``model.objectives.itm``). Without it there is
        no ITM rerank (retrieval is the first stage's alone), no ``itm_acc`` and no compositionality probe."""
        return "itm" in self.objectives

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
    def load_matching_weights(self, path: str, skip: tuple = (), min_share: float = 0.5, derived: tuple = ()) -> Dict[str, Tensor]:
        """Initialise from a checkpoint (file or run directory): every tensor whose name and shape
        match is loaded, the rest (new heads) keep their initialisation (``model.init_from``).

        Refused (:class:`ConfigError`) when the loaded tensors fill less than ``min_share`` of this
        model's parameters, counted in elements (``model.init_from_min_share``: a checkpoint of
        another family matches only a few tensors); parameters under a prefix in ``derived`` (e.g.
        a momentum copy rebuilt from the loaded weights) are not counted. The loaded and not
        loaded top-level modules are listed in the error, and logged when it proceeds. Names
        starting with a prefix in ``skip`` are not loaded. Returns what was loaded."""
        if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0.0 <= min_share <= 1.0:
            raise ConfigError(f"model.init_from_min_share must be a share in [0, 1], got {min_share!r}")
        file = resolve_checkpoint_path(path)
        source = f"model.init_from={path}" + ("" if str(file) == str(path) else f" ({file})")
        own = self.state_dict()
        state = upgrade_state_dict(load_checkpoint(file)["state_dict"], f"{type(self).__module__}.{type(self).__name__}", own.keys())
        state = {k: v for k, v in state.items() if not k.startswith(skip)}
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ConfigError(f"{source}: no parameter of the checkpoint matches this model")
        loaded, total = _elements_by_module({n: p for n, p in self.named_parameters() if not n.startswith(derived)}, usable)
        share = sum(loaded.values()) / max(sum(total.values()), 1)
        listing = (f"loaded: {', '.join(f'{m} ({loaded[m]:,} of {total[m]:,} elements)' for m in total if loaded[m]) or 'nothing'}; "
                   f"not loaded: {', '.join(f'{m} ({total[m]:,})' for m in total if not loaded[m]) or 'nothing'}")
        if share < min_share:
            raise ConfigError(
                f"{source}: the checkpoint fills {share:.2%} of this model's parameters ({sum(loaded.values()):,} of "
                f"{sum(total.values()):,} elements), below model.init_from_min_share={min_share} (is it a run of another "
                f"model family?); {listing}. Lower model.init_from_min_share to load it anyway"
            )
        self.load_state_dict(usable, strict=False)
        skipped = sorted(set(state) - set(usable))
        log.info("%s: %d tensors loaded (%.1f%% of the parameters); %s; checkpoint tensors not in this model: %s", source, len(usable), 100 * share, listing, skipped[:10])
        return usable

    # -- evaluation --------------------------------------------------------------------------------
    def retrieval_mode(self) -> Optional[str]:
        """What val/test retrieval reports: ``fused`` (first stage + ITM rerank), ``first_stage``
        (the ITM head is not trained in this run: the first stage alone), or None (retrieval
        off, or neither a trained ITM head nor a first stage: said once in the log)."""
        if not self.retrieval_cfg["enabled"]:
            return None
        if self.trains_itm:
            return "fused"
        choice = self.retrieval_cfg["first_stage"]
        if choice not in (None, "none") and (choice != "self" or self.has_embeddings):
            return "first_stage"
        if not self._said_no_retrieval:
            self._said_no_retrieval = True
            if world_info()[0] == 0:
                log.warning("model.retrieval.enabled=true, but no retrieval is reported: the ITM head is not trained "
                            "(model.objectives.itm.weight=0) and there is no first stage (model.retrieval.first_stage=%s%s)", choice,
                            " without contrastive embeddings" if choice == "self" else "")
        return None

    def _eval_step(self, batch: ImageTextBatch, stage: str) -> None:
        if self.trains_itm or self.retrieval_mode() is not None:  # the split's pairs: retrieval, ITM accuracy
            text_ids = batch.text_ids if batch.text_ids is not None else torch.arange(batch.num_texts, device=self.device)
            getattr(self, f"{stage}_pairs").update(batch.images, batch.image_ids, batch.input_ids, batch.attention_mask, batch.text_image_ids, text_ids)
        if self.vqa_head is not None and batch.question_input_ids is not None:
            logits, soft = self.vqa_logits(batch)
            q = batch.question_input_ids.shape[1]
            question_ids = (batch.image_ids[:, None] * q + torch.arange(q, device=self.device)).reshape(-1)  # [B * Q]
            getattr(self, f"{stage}_vqa").update(logits.float(), soft.float(), question_ids)
        if self.trains_itm and batch.neg_input_ids is not None and batch.neg_kinds is not None:
            rows = caption_rows(batch.image_ids, batch.text_image_ids)
            pos = self.itm_head.score(self.fused_pooled(batch.images[rows], batch.input_ids, batch.attention_mask))  # [T]
            hard = self.itm_head.score(self.fused_pooled(batch.images, batch.neg_input_ids, batch.neg_attention_mask))  # [B]
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
                model = load_model(choice)[0]
                self._first_stage.append(model.to(self.device).eval())
            embed_images, embed_texts = self._first_stage[0].embed_images, self._first_stage[0].embed_texts
        n = self.retrieval_cfg["batch_size"]
        width = max(int(pairs.attention_mask.sum(1).max()), 1)  # the store pads to the model's positions
        ids, mask = pairs.input_ids[:, :width], pairs.attention_mask[:, :width]
        img = torch.cat([embed_images(pairs.images[i : i + n]).float() for i in range(0, pairs.images.shape[0], n)])
        txt = torch.cat([embed_texts(ids[i : i + n], mask[i : i + n]).float() for i in range(0, ids.shape[0], n)])
        return (txt @ img.T).cpu()

    # -- the split's metrics, sharded over the DDP ranks -------------------------------------------
    def _sum_over_ranks(self, t: Tensor) -> Tensor:
        """``t`` summed over the DDP ranks (itself on one process); on the CPU."""
        if world_info()[1] == 1:
            return t
        t = t.to(self.device)
        torch.distributed.all_reduce(t)
        return t.cpu()

    def _score_pairs(self, scorer: PairScorer, image_rows: Tensor, text_rows: Tensor) -> Tensor:
        """``[P]`` scores of the pairs ``(image_rows [P], text_rows [P])``: each rank fuses every
        ``world``-th batch of ``retrieval.batch_size`` pairs, so the batches (and scores) are
        the same on any number of ranks."""
        rank, world = world_info()
        n = int(self.retrieval_cfg["batch_size"])
        scores = torch.zeros(image_rows.numel())
        for k, start in enumerate(range(0, image_rows.numel(), n)):
            if k % world == rank:
                scores[start : start + n] = scorer(image_rows[start : start + n], text_rows[start : start + n]).float().cpu()
        return self._sum_over_ranks(scores)

    def _itm_accuracy(self, pairs: EvalPairs, scorer: PairScorer) -> float:
        """Balanced ITM accuracy over the split: every caption with its image (matched) and with
        another image drawn uniformly by a generator seeded with ``ITM_EVAL_SEED`` (not matched):
        ``0.5 * (share of matched pairs scored > 0 + share of unmatched pairs scored <= 0)``.
        The pairs depend on the split and the seed only, not on batches, ranks or other draws."""
        own = pairs.text_to_image.cpu()  # [N_t]
        n_t, n_i = own.numel(), pairs.images.shape[0]
        texts = torch.arange(n_t)
        if n_i < 2:  # a single image: no unmatched pair
            return float((self._score_pairs(scorer, own, texts) > 0).float().mean())
        other = torch.randint(0, n_i - 1, (n_t,), generator=torch.Generator().manual_seed(ITM_EVAL_SEED))
        other = other + (other >= own).long()  # uniform over the images other than the caption's
        scores = self._score_pairs(scorer, torch.cat([own, other]), torch.cat([texts, texts]))
        return float(0.5 * ((scores[:n_t] > 0).float().mean() + (scores[n_t:] <= 0).float().mean()))

    def _fused_retrieval(self, pairs: EvalPairs, first: Optional[Tensor], scorer: PairScorer) -> Dict[str, float]:
        """First stage + ITM rerank over the collected split, sharded over the DDP ranks."""
        rank, world = world_info()
        result = fused_retrieval(
            scorer,
            num_images=pairs.images.shape[0],
            text_to_image=pairs.text_to_image.cpu(),
            first_stage=first,
            top_k=int(self.retrieval_cfg["top_k"]),
            batch_size=int(self.retrieval_cfg["batch_size"]),
            max_full_pairs=int(self.retrieval_cfg["max_full_pairs"]),
            shard=(rank, world),
            reduce=self._sum_over_ranks if world > 1 else None,
        )
        values = dict(result.metrics, pairs_scored=float(result.pairs_scored))
        if result.first_stage_metrics:
            values.update({f"first_stage/{k}": v for k, v in result.first_stage_metrics.items()})
        return values

    def _pair_metrics(self, pairs: EvalPairs) -> Dict[str, float]:
        """Retrieval (per :meth:`retrieval_mode`) and ITM accuracy of the collected split."""
        values: Dict[str, float] = {}
        mode = self.retrieval_mode()
        scorer = self.pair_scorer(pairs) if self.trains_itm else None
        if mode is not None:
            first = self._first_stage_scores(pairs)
            if mode == "first_stage":  # an untrained ITM head would rerank at random: the first stage alone
                values.update(retrieval_metrics_from_scores(first, first.T.contiguous(), pairs.text_to_image.cpu()))
            else:
                values.update(self._fused_retrieval(pairs, first, scorer))
        if self.trains_itm:
            values["itm_acc"] = self._itm_accuracy(pairs, scorer)
        return values

    def evaluation_metrics(self, stage: str) -> Dict[str, float]:
        """The metrics of the split evaluated in ``stage`` (``val`` | ``test``), without prefix;
        the states are gathered from every rank with the sampler's padding repeats dropped by
        id, so every rank returns the values of one process. Resets the states."""
        values: Dict[str, float] = {}
        store: PairStore = getattr(self, f"{stage}_pairs")
        if store.update_count:
            pairs = store.compute()
            store.reset()
            values.update(self._pair_metrics(pairs))
        compositionality = getattr(self, f"{stage}_compositionality")
        if compositionality.update_count:
            values.update(compositionality.compute())
            compositionality.reset()
        vqa: VQAScore = getattr(self, f"{stage}_vqa")
        if vqa.update_count:
            values["vqa_score"] = float(vqa.compute())
            vqa.reset()
        return values

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/{k}": v for k, v in self.evaluation_metrics("val").items()}, sync_dist=False)

    def on_test_epoch_end(self) -> None:
        self.log_dict({f"test/{k}": v for k, v in self.evaluation_metrics("test").items()}, sync_dist=False)


def _elements_by_module(parameters: Mapping[str, Tensor], loaded: Mapping[str, Tensor]) -> tuple[Dict[str, int], Dict[str, int]]:
    """``({module: elements loaded}, {module: elements})`` per top-level module name of the
    ``parameters`` (name -> tensor), ``loaded`` being the tensors taken from a checkpoint."""
    done: Dict[str, int] = {}
    total: Dict[str, int] = {}
    for name, p in parameters.items():
        module = name.split(".", 1)[0]
        total[module] = total.get(module, 0) + p.numel()
        done[module] = done.get(module, 0) + (p.numel() if name in loaded else 0)
    return done, total
