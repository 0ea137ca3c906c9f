"""Random-number-generator states in checkpoints, so a resumed run continues the same random stream.

Lightning checkpoints hold the weights, optimizer, schedulers and loop progress but not the RNG
states: a run resumed from a checkpoint would draw different dropout masks, MLM masks and ITM
negatives than the run that was interrupted. This callback stores the Python, NumPy and torch (CPU
and every CUDA device) states of global rank zero in the checkpoint and puts them back on every
rank right before the first training batch after the restore, i.e. after the loaders were built
and any sanity validation ran, which is where the uninterrupted run continued from. (The training
loader draws its worker seed from its own generator, so building it does not touch these states.)
"""

from __future__ import annotations

import random
from typing import Any, Dict, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

KEY = "rng_states"


def collect_rng_states() -> Dict[str, Any]:
    """The states of Python's ``random``, NumPy's global RNG and torch (CPU, each CUDA device)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # plain types and tensors only, so checkpoints stay loadable with torch.load(weights_only=True)
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    states: Dict[str, Any] = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states` (a CUDA state is skipped on a machine without CUDA)."""
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGState(Callback):
    """Save RNG states with every checkpoint; restore them when training resumes from one."""

    def __init__(self) -> None:
        self._pending: Optional[Dict[str, Any]] = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        checkpoint[KEY] = collect_rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Dict[str, Any]) -> None:
        self._pending = checkpoint.get(KEY)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
