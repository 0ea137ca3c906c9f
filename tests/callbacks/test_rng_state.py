"""RNGState: the random streams continue after a checkpoint round trip, and the file loads with weights_only."""

import io
import random

import numpy as np
import torch

from mmresearch.callbacks.rng_state import RNGState


def test_states_round_trip_through_a_weights_only_checkpoint():
    cb = RNGState()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt = {}
    cb.on_save_checkpoint(None, None, ckpt)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    cb.on_load_checkpoint(None, None, loaded)
    cb.on_train_batch_start(None, None, None, 0)  # restored right before the first batch
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    state_after = torch.get_rng_state()
    cb.on_train_batch_start(None, None, None, 1)  # only once
    assert torch.equal(torch.get_rng_state(), state_after)
