"""FeatureQueue: FIFO with wrap-around, image ids kept with their features, only filled rows returned."""

import pytest
import torch

from mmresearch.modules.queues import FeatureQueue
from mmresearch.utils.errors import ConfigError


def _rows(ids):
    ids = torch.tensor(ids)
    feats = ids.float()[:, None].repeat(1, 2)
    return feats, -feats, ids


def test_fills_then_wraps_around_overwriting_the_oldest():
    q = FeatureQueue(size=5, dim=2)
    assert q.contents()[0].shape == (0, 2)  # nothing before the first enqueue (no random rows)
    q.enqueue(*_rows([10, 11, 11]))  # two captions of image 11: both kept with id 11
    img, txt, ids = q.contents()
    assert ids.tolist() == [10, 11, 11] and torch.equal(txt, -img) and int(q.ptr) == 3
    q.enqueue(*_rows([12, 13, 14]))  # wraps: 14 overwrites the oldest row (10)
    img, txt, ids = q.contents()
    assert ids.tolist() == [14, 11, 11, 12, 13]
    assert img[:, 0].tolist() == [14.0, 11.0, 11.0, 12.0, 13.0] and int(q.ptr) == 1 and int(q.filled) == 5
    q.enqueue(*_rows([20, 21, 22, 23, 24, 25, 26]))  # more rows than the queue: the last 5 stay
    assert sorted(q.contents()[2].tolist()) == [22, 23, 24, 25, 26]


def test_state_dict_round_trip_keeps_the_queue():
    q = FeatureQueue(size=4, dim=2)
    q.enqueue(*_rows([1, 2, 3]))
    r = FeatureQueue(size=4, dim=2)
    r.load_state_dict(q.state_dict())
    assert r.contents()[2].tolist() == [1, 2, 3] and int(r.ptr) == 3


def test_errors():
    with pytest.raises(ConfigError, match="model.queue_size"):
        FeatureQueue(size=0, dim=2)
    q = FeatureQueue(size=4, dim=2)
    with pytest.raises(ValueError, match="as many"):
        q.enqueue(torch.zeros(2, 2), torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
