"""CLIP-style dual encoder, in general: named modality towers aligned in pairs.

Each tower is an encoder and a projection head into the shared space (:class:`Tower`); the pairs
are contrastive objectives (``model.objectives.<pair>``, :class:`~mmresearch.modules.objectives.ContrastiveObjective`
with its two ``modalities``, loss, temperature and weight). Two towers ``image`` and ``text`` and
one pair is CLIP; another modality is another tower (an encoder config) and another pair, with no
change here.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from mmresearch.data.batch import ImageTextBatch
from mmresearch.models.embedding_retrieval import EmbeddingRetrievalModule
from mmresearch.modules.lock import layer_lr_scales, lock_encoder
from mmresearch.modules.lora import add_lora
from mmresearch.modules.objectives.base import Objective, StepOutputs
from mmresearch.modules.objectives.contrastive import ContrastiveObjective, warn_unused_negatives
from mmresearch.utils.errors import ConfigError

HeadSpec = Union[nn.Module, Callable[..., nn.Module]]


class Tower(nn.Module):
    """One modality's encoder and projection head: ``inputs -> [N, E]`` (the head's output,
    L2-normalised by the built-in heads).

    Args:
        encoder: a module with ``output_dim`` returning an ``EncoderOutput`` (``.pooled [N, D]``).
        head: a built head, or a partial taking ``in_dim`` (filled with the encoder's width).
        modality: the tower's name, for error messages (``model.towers.<modality>``).
        lock: ``{unlocked_blocks, unlock_norms}`` (:func:`~mmresearch.modules.lock.lock_encoder`):
            fine-tune only the encoder's last blocks; None or ``unlocked_blocks: null``: all of it.
        lora: ``{r, alpha, dropout, target_modules}``: LoRA adapters on the encoder's linear
            layers (:func:`~mmresearch.modules.lora.add_lora`), the rest of the encoder frozen.
        lr_decay: layer-wise learning-rate decay of the encoder (:func:`~mmresearch.modules.lock.layer_lr_scales`;
            e.g. 0.65); None: one learning rate. The head trains at the base rate.
    """

    def __init__(self, encoder: nn.Module, head: HeadSpec, modality: str, lock: Optional[Mapping[str, Any]] = None,
                 lr_decay: Optional[float] = None, lora: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.modality = modality
        self.encoder = encoder
        if lora:
            add_lora(encoder, lora, key=f"model.towers.{modality}.lora")
        self.lr_decay = lr_decay
        if lr_decay is not None:
            layer_lr_scales(encoder, lr_decay, key=f"model.towers.{modality}.lr_decay")  # checked now, used by the optimizer
        if lock:
            unknown = set(lock) - {"unlocked_blocks", "unlock_norms"}
            if unknown:
                raise ConfigError(f"model.towers.{modality}.lock: unknown keys {sorted(unknown)}; expected unlocked_blocks, unlock_norms")
            lock_encoder(encoder, lock.get("unlocked_blocks"), bool(lock.get("unlock_norms", False)), key=f"model.towers.{modality}.lock")
        in_dim = int(encoder.output_dim)
        if isinstance(head, nn.Module):
            got = getattr(head, "in_dim", None)
            if got is not None and got != in_dim:
                raise ConfigError(f"model.towers.{modality}.head.in_dim={got} but model.towers.{modality}.encoder outputs "
                                  f"width {in_dim}: remove the head's in_dim or make them equal")
            self.head = head
        else:
            self.head = head(in_dim=in_dim)

    @property
    def out_dim(self) -> Optional[int]:
        return getattr(self.head, "out_dim", None)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.head(self.encoder(*inputs).pooled)


class DualEncoder(EmbeddingRetrievalModule):
    """Modality towers trained by contrastive objectives over pairs of them.

    Args:
        towers: ``modality -> {encoder, head}`` (config ``model.towers``; a batch carries each
            modality's inputs by name: :meth:`ImageTextBatch.inputs`). ``image`` and ``text``
            give the retrieval evaluation, zero-shot classification and probes.
        objectives: ``name -> Objective`` (config ``model.objectives``): contrastive pairs, and
            any other objective whose needs this model meets.
        optimizer, scheduler, tokenizer, eval_chunk_size: see :class:`EmbeddingRetrievalModule`.
    """

    def __init__(
        self,
        towers: Mapping[str, Mapping[str, Any]],
        objectives: Mapping[str, Objective],
        optimizer: Callable,
        scheduler: Optional[Callable] = None,
        tokenizer: Any = None,
        eval_chunk_size: Optional[int] = 1024,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, tokenizer=tokenizer, eval_chunk_size=eval_chunk_size)
        if not towers:
            raise ConfigError("model.towers: at least one modality tower is needed")
        built = {}
        for modality, spec in dict(towers).items():
            spec = dict(spec or {})
            if not {"encoder", "head"} <= set(spec) <= {"encoder", "head", "lock", "lr_decay", "lora"}:
                raise ConfigError(f"model.towers.{modality} takes the keys encoder, head, lock, lr_decay and lora, got {sorted(spec)}")
            built[modality] = Tower(spec["encoder"], spec["head"], modality, spec.get("lock"), spec.get("lr_decay"), spec.get("lora"))
        self.towers = nn.ModuleDict(built)
        widths = {m: t.out_dim for m, t in self.towers.items() if t.out_dim is not None}
        if len(set(widths.values())) > 1:
            shown = " and ".join(f"model.towers.{m}.head.out_dim={w}" for m, w in widths.items())
            raise ConfigError(f"{shown} must be equal (the shared space)")
        self._warned_negatives = False
        self.register_objectives(objectives)

    @classmethod
    def image_text(
        cls,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        image_head: HeadSpec,
        text_head: HeadSpec,
        loss: nn.Module,
        temperature: nn.Module,
        optimizer: Callable,
        scheduler: Optional[Callable] = None,
        **kwargs: Any,
    ) -> "DualEncoder":
        """The CLIP case in Python: an ``image`` and a ``text`` tower and one contrastive pair
        ``image_text`` (what ``conf/model/dual_encoder.yaml`` builds)."""
        towers = {"image": {"encoder": image_encoder, "head": image_head}, "text": {"encoder": text_encoder, "head": text_head}}
        objectives = {"image_text": ContrastiveObjective(loss=loss, temperature=temperature, weight=1.0, modalities=("image", "text"))}
        return cls(towers=towers, objectives=objectives, optimizer=optimizer, scheduler=scheduler, **kwargs)

    @property
    def modalities(self) -> tuple:
        return tuple(self.towers)

    def lr_scales(self) -> Dict[nn.Parameter, float]:
        """The layer-wise learning-rate decay of the towers that have one (``model.towers.<m>.lr_decay``)."""
        scales: Dict[nn.Parameter, float] = {}
        for modality, tower in self.towers.items():
            if tower.lr_decay is not None:
                scales.update(layer_lr_scales(tower.encoder, tower.lr_decay, key=f"model.towers.{modality}.lr_decay"))
        return scales

    def embed(self, modality: str, *inputs: Tensor) -> Tensor:
        """``[N, E]`` embeddings of ``modality``'s inputs through its tower."""
        if modality not in self.towers:
            raise KeyError(f"this model has no {modality!r} tower (towers: {list(self.towers)})")
        return self.towers[modality](*inputs)

    def embed_images(self, images: Tensor) -> Tensor:
        return self.embed("image", images)

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.embed("text", input_ids, attention_mask)

    def step_outputs(self, batch: ImageTextBatch) -> StepOutputs:
        """Every tower's embeddings of the batch. When the batch carries hard-negative captions
        (``data.train_negatives=true``) and an objective takes them (NegCLIP; every built-in loss
        does, each in its own way: see :mod:`mmresearch.modules.losses`), they go through the text
        tower in the same pass as the captions; otherwise they are ignored, with a warning once."""
        outputs = StepOutputs()
        wanted = any(getattr(o, "takes_hard_negatives", False) for o in self.objectives.values())
        use_negatives = batch.neg_input_ids is not None and wanted and "text" in self.towers
        if batch.neg_input_ids is not None and not wanted and not self._warned_negatives:
            warn_unused_negatives(self, self.objectives.values())
        for modality, tower in self.towers.items():
            if modality == "text" and use_negatives:  # one text-tower pass for captions and negatives
                n = batch.num_texts
                emb = tower(torch.cat([batch.input_ids, batch.neg_input_ids]), torch.cat([batch.attention_mask, batch.neg_attention_mask]))
                outputs.embeddings[modality], outputs.negative_text_embeddings = emb[:n], emb[n:]
            else:
                outputs.embeddings[modality] = tower(*batch.inputs(modality))
        return outputs
