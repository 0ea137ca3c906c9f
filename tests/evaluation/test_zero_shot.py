"""Zero-shot classifier: prompt ensembles averaged in embedding space, top-k accuracy, template checks."""

import pytest
import torch
import torch.nn.functional as F

from mmresearch.evaluation.zero_shot import build_zero_shot_classifier, check_templates, zero_shot_accuracy
from mmresearch.utils.errors import ConfigError

WORDS = ["a", "b", "red", "blue", "green", "photo", "of"]


def _tokenize(texts):
    rows = [[WORDS.index(w) for w in t.split()] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def _embed(ids, mask):  # bag of one-hot words, so the expected class embedding is known by hand
    return (F.one_hot(ids, len(WORDS)).float() * mask[..., None]).sum(1)


def test_classifier_is_normalised_mean_of_normalised_prompts():
    cls = build_zero_shot_classifier(_embed, _tokenize, ["red", "blue"], ["a {}", "photo of {}"])
    a_red = F.normalize(_embed(*_tokenize(["a red"])), dim=-1)
    photo_red = F.normalize(_embed(*_tokenize(["photo of red"])), dim=-1)
    expected = F.normalize((a_red + photo_red) / 2, dim=-1)
    assert torch.allclose(cls[0], expected[0], atol=1e-6)
    assert torch.allclose(cls.norm(dim=-1), torch.ones(2))


def test_accuracy_top1_top5_by_hand():
    classifier = torch.eye(6)
    images = torch.eye(6)[[0, 1, 2, 3]] + 0.1 * torch.eye(6)[[1, 0, 0, 0]]
    labels = torch.tensor([0, 1, 5, 3])  # image 2 points at class 2, not 5
    out = zero_shot_accuracy(images, labels, classifier, top_k=(1, 5))
    assert out["top1"] == pytest.approx(3 / 4)
    # top-5 of image 2: classes 2, 0 (0.1) then ties at 0; class 5 is among them or not -> check by hand
    logits = F.normalize(images, dim=-1) @ classifier.T
    hit = [int(labels[i] in logits[i].topk(5).indices) for i in range(4)]
    assert out["top5"] == pytest.approx(sum(hit) / 4)


def test_topk_not_below_num_classes():
    out = zero_shot_accuracy(torch.eye(3), torch.arange(3), torch.eye(3), top_k=(1, 5))
    assert set(out) == {"top1"}  # top-5 of 3 classes is always right: left out


@pytest.mark.parametrize("bad", [[], "a {}", ["a photo"], ["{} and {}"]])
def test_bad_templates_name_the_key(bad):
    with pytest.raises(ConfigError, match="templates"):
        check_templates(bad, "callbacks.zero_shot.templates.shape")
