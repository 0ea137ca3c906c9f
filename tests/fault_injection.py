"""Callbacks that break a run on purpose, for the fault-tolerance tests (added with ``+callbacks.<name>``)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class SignalAtStep(Callback):
    """Send ``signal`` (a name: ``KILL``, ``USR1``, ...) to this process when training reaches
    global step ``step``, before that step's batch runs."""

    def __init__(self, step: int, signal: str = "KILL") -> None:
        self.step = int(step)
        self.signal = signal
        self.sent = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.sent and trainer.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), getattr(signal, f"SIG{self.signal}"))
