"""The objective interface: the one weighted sum, named terms, what an objective needs of a model."""

import pytest
import torch
from torch import nn

from mmresearch.modules.objectives import ContrastiveObjective, Objective, StepOutputs, weighted_sum
from mmresearch.modules.losses import InfoNCELoss
from mmresearch.modules.temperature import FixedTemperature
from mmresearch.utils.errors import ConfigError


def test_weighted_sum_is_the_weights_times_the_terms_in_config_order():
    terms = {"b": torch.tensor(2.0), "a": torch.tensor(3.0), "a_acc": torch.tensor(0.5)}
    assert torch.equal(weighted_sum(terms, {"a": 0.5, "b": 2.0}), 0 + 0.5 * torch.tensor(3.0) + 2.0 * torch.tensor(2.0))
    with pytest.raises(KeyError, match=r"objectives \['c'\] returned no term"):
        weighted_sum(terms, {"a": 1.0, "c": 1.0})


def test_terms_are_named_after_the_objective():
    objective = Objective(weight=1.0)
    objective.name = "itc"
    assert list(objective.named({"loss": 1, "loss_i2t": 2, "acc": 3})) == ["itc", "itc_loss_i2t", "itc_acc"]


@pytest.mark.parametrize("weight", [-1.0, "1", True])
def test_a_weight_must_be_a_number_at_least_zero(weight):
    with pytest.raises(ConfigError, match="weight must be a number >= 0"):
        Objective(weight=weight)


def test_attach_names_what_the_model_lacks():
    class NeedsFusion(Objective):
        requires = ("itm_logits", "mlm_head")

    class Model(nn.Module):
        mlm_head = nn.Linear(2, 2)

    with pytest.raises(ConfigError, match=r"model\.objectives\.itm \(NeedsFusion\) cannot be trained by Model: it needs itm_logits,"):
        NeedsFusion(weight=1.0).attach(Model(), "itm")


def test_contrastive_objective_is_its_loss_on_the_two_modalities_and_shares_the_scale():
    class Batch:
        def ids(self, modality):
            return torch.arange(4) if modality == "image" else torch.tensor([0, 1, 2, 3])

    g = torch.Generator().manual_seed(0)
    image, text = (torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1) for _ in range(2))
    objective = ContrastiveObjective(InfoNCELoss(), FixedTemperature(tau=0.1), weight=1.0, modalities=["image", "text"])
    objective.name = "image_text"
    outputs = StepOutputs(embeddings={"image": image, "text": text})
    terms = objective(None, Batch(), outputs)
    want = InfoNCELoss()(image, text, torch.tensor(10.0), torch.arange(4), torch.arange(4))
    assert torch.equal(terms["image_text"], want["loss"]) and torch.equal(terms["image_text_loss_t2i"], want["loss_t2i"])
    assert float(outputs.logit_scale) == pytest.approx(10.0) and not outputs.logit_scale.requires_grad
    with pytest.raises(ConfigError, match="two different modalities"):
        ContrastiveObjective(InfoNCELoss(), FixedTemperature(tau=0.1), weight=1.0, modalities=["text", "text"])
