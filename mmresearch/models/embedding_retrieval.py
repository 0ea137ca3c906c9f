"""The evaluation protocol of models with a shared embedding space (the dual encoder): retrieval
by the cosine of image and caption embeddings, and the compositionality probe (a caption against
its hard negative, by cosine)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from mmresearch.data.batch import ImageTextBatch
from mmresearch.evaluation.compositionality import CompositionalityMetric, caption_wins
from mmresearch.evaluation.metric import RetrievalMetric, add_embedded_batch
from mmresearch.models.base import MultimodalModule


class EmbeddingRetrievalModule(MultimodalModule):
    """:class:`MultimodalModule` evaluated by embedding retrieval: ``val/*`` and ``test/*``
    retrieval metrics (``t2i_R@1``... ``rsum``) over the whole split (every rank's states
    gathered), and ``comp_*`` when the data has hard-negative captions.

    Args:
        eval_chunk_size: queries scored at once by the retrieval evaluator (bounded memory).
        optimizer, scheduler, tokenizer: see :class:`MultimodalModule`.
    """

    def __init__(self, optimizer: Callable, scheduler: Optional[Callable] = None, tokenizer: Any = None, eval_chunk_size: Optional[int] = 1024) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, tokenizer=tokenizer)
        self.eval_chunk_size = eval_chunk_size
        self.val_retrieval = RetrievalMetric(chunk_size=eval_chunk_size)
        self.test_retrieval = RetrievalMetric(chunk_size=eval_chunk_size)
        self.val_compositionality = CompositionalityMetric(kind_names=())
        self.test_compositionality = CompositionalityMetric(kind_names=())

    def _eval_step(self, batch: ImageTextBatch, retrieval: RetrievalMetric, compositionality: CompositionalityMetric) -> None:
        image_emb, text_emb = add_embedded_batch(retrieval, self, batch)
        if batch.neg_input_ids is not None and batch.neg_kinds is not None:
            negative_emb = self.embed_texts(batch.neg_input_ids, batch.neg_attention_mask)
            wins = caption_wins(image_emb, batch.image_ids, text_emb, batch.text_image_ids, negative_emb)
            compositionality.update(batch.image_ids, wins, batch.neg_kinds)

    def validation_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_retrieval, self.val_compositionality)

    def test_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_retrieval, self.test_compositionality)

    def _log_eval(self, prefix: str, *metrics) -> Dict[str, float]:
        values: Dict[str, float] = {}
        for metric in metrics:
            if metric.update_count == 0:  # e.g. no hard negatives in this data
                continue
            values.update(metric.compute())
            metric.reset()
        # The values are computed from states gathered from every rank: identical everywhere.
        self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, sync_dist=False)
        return values

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_retrieval, self.val_compositionality)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_retrieval, self.test_compositionality)
