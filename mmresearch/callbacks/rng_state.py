"""Random-number-generator states in checkpoints, so a resumed run continues the same random stream.

Lightning checkpoints hold the weights, optimizer, schedulers and loop progress but not the RNG
states: a run resumed from a checkpoint would draw different dropout masks, MLM masks and ITM
negatives than the run that was interrupted. This callback stores the Python, NumPy and torch (CPU
and every CUDA device) states of every rank in the checkpoint (gathered to the rank that writes it) and puts each
rank's own back right before the first training batch after the restore, i.e. after the loaders were built
and any sanity validation ran, which is where the uninterrupted run continued from. (The training
loader draws its worker seed from its own generator, so building it does not touch these states.)
"""

from __future__ import annotations

import logging
import random
from typing import Any, Dict, List, Optional

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

KEY = "rng_states"


def collect_rng_states() -> Dict[str, Any]:
    """The states of Python's ``random``, NumPy's global RNG and torch (CPU, each CUDA device)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # plain types and tensors only, so checkpoints stay loadable with torch.load(weights_only=True)
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    states: Dict[str, Any] = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states` (a CUDA state is skipped on a machine without CUDA)."""
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


class RNGState(Callback):
    """Save RNG states with every checkpoint; restore them when training resumes from one."""

    def __init__(self) -> None:
        self._pending: Optional[Dict[str, Any]] = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        # every rank builds the checkpoint dict (Lightning's save is collective); rank 0 writes it
        states = collect_rng_states()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: List[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, states)
            checkpoint[KEY] = {"per_rank": gathered}
        else:
            checkpoint[KEY] = {"per_rank": [states]}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        saved = checkpoint.get(KEY)
        if saved is None:
            return
        per_rank = saved["per_rank"]
        rank = trainer.global_rank if trainer is not None else 0
        if len(per_rank) != (trainer.world_size if trainer is not None else 1):
            log.warning("checkpoint has RNG states of %d ranks, this run has %d: every rank takes rank 0's", len(per_rank),
                        trainer.world_size if trainer is not None else 1)
            rank = 0
        self._pending = per_rank[rank]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
