"""Distribution alignment (cmpl/dist_align.py): the formula, the running mean, and the Task's state."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cmpl.dist_align import DistributionAlignment
from cmpl.methods import build_task


def test_aligned_prediction_is_p_over_running_mean_renormalised():
    torch.manual_seed(0)
    logits = torch.randn(6, 4) * 3
    da = DistributionAlignment(4, momentum=0.75)
    out = da(logits)
    p = torch.softmax(logits, dim=-1)
    p_model = 0.75 * torch.full((4,), 0.25) + 0.25 * p.mean(dim=0)  # updated before it is used
    assert torch.allclose(da.p_model, p_model)
    expected = p / p_model
    expected = expected / expected.sum(dim=-1, keepdim=True)
    assert torch.allclose(out.exp(), expected, atol=1e-6)  # log-probabilities of p~
    assert torch.allclose(out.exp().sum(dim=-1), torch.ones(6))


def test_a_class_the_network_over_predicts_loses_confidence():
    # Every weak prediction favours class 0: after some steps the running mean says so, and the aligned
    # predictions move mass to the other classes (the collapse guard).
    logits = torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.0, 1.5], [2.5, 1.0, 1.0]])
    da = DistributionAlignment(3, momentum=0.5)
    for _ in range(20):
        aligned = da(logits)
    assert da.p_model[0] > 0.6
    before = torch.softmax(logits, dim=-1)
    assert (aligned.exp()[:, 0] < before[:, 0]).all() and (aligned.exp()[:, 1:] > before[:, 1:]).all()
    # the running mean settles where the average aligned prediction is uniform-ish: class 0 no longer wins all
    assert (aligned.argmax(dim=-1) != 0).any()


def test_state_round_trip_and_errors():
    da = DistributionAlignment(5, momentum=0.9)
    da(torch.randn(4, 5))
    other = DistributionAlignment(5, momentum=0.9)
    other.load_state_dict(da.state_dict())
    assert torch.equal(other.p_model, da.p_model)
    with pytest.raises(ValueError, match="3 classes, the run 5"):
        other.load_state_dict(DistributionAlignment(3, momentum=0.9).state_dict())
    with pytest.raises(ValueError, match="class count"):
        DistributionAlignment(0, momentum=0.9)
    with pytest.raises(ValueError, match="momentum"):
        DistributionAlignment(3, momentum=1.0)


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3, 4)))


def _method(name: str, dist_align: float) -> SimpleNamespace:
    return SimpleNamespace(name=name, scheme="cross", threshold=0.0, lambda_u=1.0, aux_supervised=True,
                           aux_unsupervised=True, weak_forward="no_dropout", dist_align=dist_align)


@pytest.mark.parametrize("name,roles", [("fixmatch", ["primary"]), ("cmpl", ["primary", "aux"])])
def test_tasks_align_each_networks_weak_view_and_keep_the_state(name, roles):
    torch.manual_seed(0)
    nets = {"primary": _Linear(), "aux": _Linear()}
    g = torch.Generator().manual_seed(1)
    clip = lambda n: torch.randn(n, 3, 2, 4, 4, generator=g)  # noqa: E731
    labeled = {"primary": clip(2), "aux": clip(2), "label": torch.tensor([0, 1])}
    unlabeled = {"primary_weak": clip(6), "primary_strong": clip(6), "aux_weak": clip(6), "aux_strong": clip(6),
                 "label": torch.zeros(6, dtype=torch.long)}
    plain = build_task(_method(name, 0.0), nets, num_classes=4)
    assert plain.state_dict() == {}
    task = build_task(_method(name, 0.9), nets, num_classes=4)
    out = task(labeled, unlabeled)
    assert sorted(task.state_dict()) == sorted(f"dist_align_{r}" for r in roles)
    for r in roles:  # each running mean moved off the uniform prior toward that network's weak predictions
        with torch.no_grad():
            p = torch.softmax(nets[r](unlabeled[f"{r}_weak"]), dim=-1).mean(dim=0)
        assert torch.allclose(task.state_dict()[f"dist_align_{r}"]["p_model"], 0.9 * 0.25 + 0.1 * p, atol=1e-6)
    out["loss"].backward()
    for r in roles:  # the unlabeled loss still reaches every parameter
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in nets[r].parameters())
    fresh = build_task(_method(name, 0.9), nets, num_classes=4)
    fresh.load_state_dict(task.state_dict())
    assert all(torch.equal(fresh.state_dict()[k]["p_model"], v["p_model"]) for k, v in task.state_dict().items())
    assert build_task(_method("supervised", 0.9), nets, num_classes=4).state_dict() == {}
