"""cmpl.methods: the CMPL, FixMatch and supervised Tasks on tiny stand-in networks."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cmpl.losses import compiled_pseudo_label_losses, pseudo_label_losses
from cmpl.methods import CMPLTask, FixMatchTask, SupervisedTask, build_task

K, B_L, B_U = 5, 2, 4
STAT_KEYS = {"mask_f", "mask_a", "pl_acc_f", "pl_acc_a", "correct_pl_f", "correct_pl_a"}


class TinyNet(nn.Module):
    """Conv3d + BN + global pool + linear: (N, 3, T, H, W) -> (N, K). No conv bias (BN would zero its grad)."""

    def __init__(self, width: int, num_classes: int = K) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3, 4)))


class Echo(nn.Module):
    """Logits = the clip itself, (N, K, 1, 1, 1) -> (N, K), times a learnable scale: logits set by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * self.scale


def method(name="cmpl", **kw):
    base = dict(name=name, scheme="cross", threshold=0.9, lambda_u=2.0, aux_supervised=True,
                aux_unsupervised=True)
    return SimpleNamespace(**{**base, **kw})


def clip_batches(seed=0):
    g = torch.Generator().manual_seed(seed)

    def clips(n, t):
        return torch.randn(n, 3, t, 6, 6, generator=g)

    labeled = {"primary": clips(B_L, 4), "aux": clips(B_L, 8), "label": torch.randint(0, K, (B_L,), generator=g)}
    unlabeled = {"primary_weak": clips(B_U, 4), "primary_strong": clips(B_U, 4), "aux_weak": clips(B_U, 8),
                 "aux_strong": clips(B_U, 8), "label": torch.randint(0, K, (B_U,), generator=g)}
    return labeled, unlabeled


def nets(seed=0):
    torch.manual_seed(seed)
    return TinyNet(4), TinyNet(2)


def grads_of(net):
    return {name: p.grad for name, p in net.named_parameters()}


def test_cmpl_step_trains_both_networks():
    f, a = nets()
    task = build_task(method(threshold=0.0), {"primary": f, "aux": a})  # threshold 0: every pseudo-label is used
    assert isinstance(task, CMPLTask) and task.uses_unlabeled
    assert task.networks == {"primary": f, "aux": a}
    before = {k: copy.deepcopy(n.state_dict()) for k, n in task.networks.items()}
    opt = torch.optim.SGD([p for n in task.networks.values() for p in n.parameters()], lr=0.1)
    out = task(*clip_batches())
    out["loss"].backward()
    for key, net in task.networks.items():
        for name, g in grads_of(net).items():
            assert g is not None, f"{key}.{name} got no gradient"
            assert bool(torch.isfinite(g).all()) and bool(g.abs().sum() > 0), f"{key}.{name}: {g}"
    opt.step()
    for key, net in task.networks.items():
        changed = [not torch.equal(v, before[key][k]) for k, v in net.state_dict().items()
                   if k.endswith(("weight", "bias"))]
        assert all(changed), f"{key}: some weights did not change"


@pytest.mark.parametrize("name", ["fixmatch", "supervised"])
def test_single_network_methods_train_only_primary(name):
    f, a = nets()
    task = build_task(method(name, threshold=0.0), {"primary": f, "aux": a})
    assert task.networks == {"primary": f}
    assert task.uses_unlabeled == (name == "fixmatch")
    labeled, unlabeled = clip_batches()
    out = task(labeled, unlabeled if task.uses_unlabeled else None)
    out["loss"].backward()
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads_of(f).values())
    assert all(g is None for g in grads_of(a).values())
    expected = {"loss", "loss_s_f"} | ({"loss_u_f", "mask_f", "pl_acc_f", "correct_pl_f"}
                                      if name == "fixmatch" else set())
    assert set(out) == expected


@pytest.mark.parametrize("name", ["cmpl", "fixmatch"])
def test_hidden_label_never_affects_the_loss(name):
    f, a = nets()
    task = build_task(method(name, threshold=0.0), {"primary": f, "aux": a})  # every pseudo-label is used
    labeled, unlabeled = clip_batches()
    torch.manual_seed(1)
    out = task(labeled, unlabeled)
    other = dict(unlabeled, label=(unlabeled["label"] + 1) % K)
    torch.manual_seed(1)
    out_other = task(labeled, other)
    assert torch.equal(out["loss"], out_other["loss"])


# Hand-made unlabeled batch for K = 3, tau = 0.9 (logit 10 vs 0, 0 gives max probability 0.99991).
WEAK_F = [[0, 10, 0], [0, 0, 0], [0, 0, 0], [0, 0, 10]]  # confident: clips 0 (class 1) and 3 (class 2)
WEAK_A = [[10, 0, 0], [0, 10, 0], [0, 0, 0], [0, 0, 10]]  # confident: clips 0 (0), 1 (1), 3 (2)
HIDDEN = [0, 2, 1, 2]


def echo_batches():
    def clip(rows):
        return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 3, 1, 1, 1)

    strong = [[1, 2, 0], [0, 1, 3], [2, 2, 1], [0, 0, 1]]
    labeled = {"primary": clip([[1, 0, 0], [0, 2, 1]]), "aux": clip([[0, 1, 0], [3, 0, 1]]),
               "label": torch.tensor([0, 2])}
    unlabeled = {"primary_weak": clip(WEAK_F), "aux_weak": clip(WEAK_A), "primary_strong": clip(strong),
                 "aux_strong": clip(strong[::-1]), "label": torch.tensor(HIDDEN)}
    return labeled, unlabeled


def test_cmpl_statistics_on_a_hand_made_case():
    task = build_task(method(threshold=0.9, lambda_u=3.0), {"primary": Echo(), "aux": Echo()})
    labeled, unlabeled = echo_batches()
    out = task(labeled, unlabeled)
    # F learns from A's pseudo-labels [0, 1, -, 2]; hidden [0, 2, 1, 2]: 3 masked, 2 correct.
    assert out["mask_f"].item() == 3 / 4
    assert out["pl_acc_f"].item() == pytest.approx(2 / 3)
    assert out["correct_pl_f"].item() == 2 / 4
    # A learns from F's pseudo-labels [1, -, -, 2]: 2 masked, 1 correct.
    assert out["mask_a"].item() == 2 / 4
    assert out["pl_acc_a"].item() == 1 / 2
    assert out["correct_pl_a"].item() == 1 / 4
    # L_u^F by hand: mean over all 4 clips of the masked CE against A's pseudo-labels.
    strong = unlabeled["primary_strong"].flatten(1)
    ce = [-torch.log_softmax(strong[i], 0)[y] for i, y in ((0, 0), (1, 1), (3, 2))]
    assert out["loss_u_f"].item() == pytest.approx(float(sum(ce)) / 4, rel=1e-6)
    total = out["loss_s_f"] + out["loss_s_a"] + 3.0 * (out["loss_u_f"] + out["loss_u_a"])
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_statistics_follow_the_scheme_and_fixmatch():
    labeled, unlabeled = echo_batches()
    own = build_task(method(scheme="fixmatch"), {"primary": Echo(), "aux": Echo()})(labeled, unlabeled)
    fixmatch = build_task(method("fixmatch"), {"primary": Echo()})(labeled, unlabeled)
    for out in (own, fixmatch):  # F's own pseudo-labels [1, -, -, 2]: 2 masked, 1 correct
        assert (out["mask_f"].item(), out["pl_acc_f"].item(), out["correct_pl_f"].item()) == (0.5, 0.5, 0.25)
    assert own["mask_a"].item() == 3 / 4  # A's own


def test_pl_acc_is_zero_when_nothing_passes():
    out = build_task(method(threshold=1.5), {"primary": Echo(), "aux": Echo()})(*echo_batches())
    for x in "fa":
        assert out[f"mask_{x}"].item() == out[f"pl_acc_{x}"].item() == out[f"correct_pl_{x}"].item() == 0.0
    assert out["loss_u_f"].item() == out["loss_u_a"].item() == 0.0


@pytest.mark.parametrize("aux_supervised,aux_unsupervised,aux_batches", [
    (True, True, [B_U, B_L + B_U]),
    (False, True, [B_U, B_U]),
    (True, False, [B_U, B_L]),
    (False, False, [B_U]),
])
def test_table6_toggles_drop_terms_and_forwards(aux_supervised, aux_unsupervised, aux_batches):
    f, a = nets()
    seen = {"primary": [], "aux": []}
    f.register_forward_pre_hook(lambda m, args: seen["primary"].append(args[0].shape[0]))
    a.register_forward_pre_hook(lambda m, args: seen["aux"].append(args[0].shape[0]))
    task = build_task(method(threshold=0.0, aux_supervised=aux_supervised, aux_unsupervised=aux_unsupervised),
                      {"primary": f, "aux": a})
    out = task(*clip_batches())
    assert seen == {"primary": [B_U, B_L + B_U], "aux": aux_batches}  # weak, then labeled + strong
    assert ("loss_s_a" in out) == aux_supervised and ("loss_u_a" in out) == aux_unsupervised
    assert STAT_KEYS <= set(out)  # A's pseudo-labels for F are made in every case
    sup = out["loss_s_f"] + out.get("loss_s_a", 0.0)
    unsup = out["loss_u_f"] + out.get("loss_u_a", 0.0)
    assert out["loss"].item() == pytest.approx((sup + 2.0 * unsup).item(), rel=1e-6)
    out["loss"].backward()
    assert all(g is not None for g in grads_of(f).values())
    assert all((g is not None) == (aux_supervised or aux_unsupervised) for g in grads_of(a).values())


@pytest.mark.parametrize("name", ["cmpl", "fixmatch", "supervised"])
def test_outputs_are_device_tensors_not_python_floats(name):
    f, a = nets()
    out = build_task(method(name), {"primary": f, "aux": a})(*clip_batches())
    assert "loss" in out and out["loss"].requires_grad
    for key, value in out.items():
        assert isinstance(value, torch.Tensor) and value.shape == () and value.dtype == torch.float32, key
        assert key == "loss" or not value.requires_grad, key


def test_compiled_loss_gives_the_same_step():
    task_eager = build_task(method(threshold=0.3), {"primary": TinyNet(4), "aux": TinyNet(2)})
    f, a = (copy.deepcopy(n) for n in task_eager.networks.values())
    task_comp = build_task(method(threshold=0.3), {"primary": f, "aux": a}, compile_loss=True)
    assert task_comp.loss_fn is compiled_pseudo_label_losses() and task_eager.loss_fn is pseudo_label_losses
    batches = clip_batches()
    out_e, out_c = task_eager(*batches), task_comp(*batches)
    for key in out_e:
        assert math.isclose(out_e[key].item(), out_c[key].item(), rel_tol=1e-5, abs_tol=1e-6), key
    # The fused loss's backward (saved gradients scaled by lambda_u) gives every parameter the eager gradient.
    out_e["loss"].backward()
    out_c["loss"].backward()
    for name in task_eager.networks:
        for (pname, pe), pc in zip(task_eager.networks[name].named_parameters(),
                                   task_comp.networks[name].parameters()):
            torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}.{pname}: {m}")


def test_build_task_errors():
    with pytest.raises(ValueError, match="needs networks for roles aux"):
        build_task(method("cmpl"), {"primary": Echo()})
    with pytest.raises(ValueError, match="unknown method 'mixmatch'"):
        build_task(method("mixmatch"), {"primary": Echo()})
    with pytest.raises(ValueError, match="unknown pseudo-label scheme 'best'"):
        build_task(method(scheme="best"), {"primary": Echo(), "aux": Echo()})
    with pytest.raises(KeyError, match="unlabeled batch has no 'aux_strong'"):
        labeled, unlabeled = echo_batches()
        del unlabeled["aux_strong"]
        build_task(method(), {"primary": Echo(), "aux": Echo()})(labeled, unlabeled)
    assert isinstance(build_task(method("supervised"), {"primary": Echo()}), SupervisedTask)
    assert isinstance(build_task(method("fixmatch"), {"primary": Echo()}), FixMatchTask)


@pytest.mark.parametrize("name", ["cmpl", "fixmatch"])
def test_lambda_warmup_ramps_the_unsupervised_weight(name):
    labeled, unlabeled = echo_batches()
    task = build_task(method(name, lambda_u=3.0, lambda_warmup_steps=4), {"primary": Echo(), "aux": Echo()})
    unsup = ("loss_u_f", "loss_u_a") if name == "cmpl" else ("loss_u_f",)
    sup = ("loss_s_f", "loss_s_a") if name == "cmpl" else ("loss_s_f",)
    for step, weight in ((0, 0.0), (1, 0.75), (2, 1.5), (4, 3.0), (9, 3.0)):
        task.step = step
        out = task(labeled, unlabeled)
        assert out["lambda_u"].item() == weight
        expected = sum(out[k].item() for k in sup) + weight * sum(out[k].item() for k in unsup)
        assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
        assert sum(out[k].item() for k in unsup) > 0  # the ramp, not an empty mask, sets the weight
    plain = build_task(method(name, lambda_u=3.0), {"primary": Echo(), "aux": Echo()})(labeled, unlabeled)
    assert "lambda_u" not in plain  # off: the paper's constant lambda, and no extra statistic
