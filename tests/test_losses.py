"""cmpl.losses: eager and compiled pseudo-label losses against a reference written from the paper's equations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmpl.losses import (
    SCHEMES,
    compiled_pseudo_label_losses,
    get_pseudo_label_losses,
    pseudo_label_losses,
    supervised_loss,
)

B_U, K, TAU = 12, 7, 0.7


def reference(f_weak, a_weak, f_strong, a_strong, *, threshold, scheme):
    """Per-clip loop over Eq. 4-5 and Appendix A, with the full distributions l_F, l_A as written there."""
    loss = {"f": torch.zeros(()), "a": torch.zeros(())}
    masks, targets = {"f": [], "a": []}, {"f": [], "a": []}
    for i in range(f_weak.shape[0]):
        p_f = torch.softmax(f_weak[i].detach().float(), dim=0)
        p_a = torch.softmax(a_weak[i].detach().float(), dim=0)
        m_f = float(p_f.max() >= threshold)
        m_a = float(p_a.max() >= threshold)
        if scheme == "cross":
            l_f, l_a = p_a, p_f
        elif scheme == "fixmatch":
            l_f, l_a = p_f, p_a
        elif scheme == "self_first":
            l_f = m_f * p_f + (1 - m_f) * p_a
            l_a = m_a * p_a + (1 - m_a) * p_f
        elif scheme == "opposite_first":
            l_f = m_a * p_a + (1 - m_a) * p_f
            l_a = m_f * p_f + (1 - m_f) * p_a
        elif scheme == "maximum":
            c = float(p_f.max() >= p_a.max())
            l_f = l_a = c * p_f + (1 - c) * p_a
        elif scheme == "average":
            l_f = l_a = (p_f + p_a) / 2
        else:
            raise AssertionError(scheme)
        for x, l, strong in (("f", l_f, f_strong), ("a", l_a, a_strong)):
            passed = bool(l.max() >= threshold)
            target = int(l.argmax())
            masks[x].append(passed)
            targets[x].append(target)
            if passed:
                loss[x] = loss[x] - torch.log_softmax(strong[i].float(), dim=0)[target]
    n = f_weak.shape[0]
    return (loss["f"] / n, loss["a"] / n, torch.tensor(masks["f"]), torch.tensor(masks["a"]),
            torch.tensor(targets["f"]), torch.tensor(targets["a"]))


def make_inputs(dtype=torch.float32, seed=0, b=B_U):
    """Weak logits with about half the clips confidently peaked, so masks are mixed; strong logits need grad."""
    g = torch.Generator().manual_seed(seed)

    def logits(peaked: bool) -> torch.Tensor:
        x = torch.randn(b, K, generator=g) * 1.5
        if peaked:
            rows = torch.rand(b, generator=g) < 0.5
            cls = torch.randint(0, K, (b,), generator=g)
            x[rows, cls[rows]] += 5.0
        return x

    f_weak, a_weak = logits(True).to(dtype), logits(True).to(dtype)
    f_strong = logits(False).to(dtype).requires_grad_()
    a_strong = logits(False).to(dtype).requires_grad_()
    return f_weak, a_weak, f_strong, a_strong


def run(fn, inputs, **kw):
    """Outputs plus the gradients of loss_f + loss_a w.r.t. the two strong-logit tensors."""
    out = fn(*inputs, **kw)
    total = out[0] + out[1]
    if not total.requires_grad:  # the reference's loss is a constant 0 when no clip passes
        return tuple(out), [torch.zeros_like(t) for t in inputs[2:]]
    grads = torch.autograd.grad(total, [inputs[2], inputs[3]], allow_unused=True)
    zero = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs[2:])]
    return tuple(out), zero


def assert_same(got, want, dtype):
    (out_g, grad_g), (out_w, grad_w) = got, want
    for name, g, w in zip(("loss_f", "loss_a"), out_g[:2], out_w[:2]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    for name, g, w in zip(("mask_f", "mask_a", "target_f", "target_a"), out_g[2:], out_w[2:]):
        assert torch.equal(g, w), f"{name}: {g} != {w}"
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1.6e-2, atol=1e-4)
    for g, w in zip(grad_g, grad_w):
        torch.testing.assert_close(g, w, **tol)


def test_inputs_give_mixed_masks():
    """Guards the other tests: on these inputs each scheme keeps some clips and drops others."""
    for scheme in SCHEMES:
        out = pseudo_label_losses(*make_inputs(), threshold=TAU, scheme=scheme)
        for mask in (out.mask_f, out.mask_a):
            assert 0 < int(mask.sum()) < B_U, scheme


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_eager_matches_reference(scheme, dtype):
    inputs = make_inputs(dtype)
    assert_same(run(pseudo_label_losses, inputs, threshold=TAU, scheme=scheme),
                run(reference, inputs, threshold=TAU, scheme=scheme), dtype)


# Compiling on CPU costs ~5-15 s per graph (and ~20-40 s once for inductor's start-up), and each (scheme,
# dtype, threshold) is its own graph, so not every combination is compiled here: every scheme is checked
# eagerly against the reference above; compiled covers cross (the method) in fp32 and bf16 with the
# threshold edge cases, fixmatch, and average (the one scheme that mixes the two distributions).
COMPILED_CASES = [(s, torch.float32, TAU) for s in ("cross", "fixmatch", "average")] + [
    ("cross", torch.bfloat16, TAU),
    ("cross", torch.float32, 1.5),  # no clip passes
    ("cross", torch.float32, 0.0),  # every clip passes (no max probability is below 1/K)
]


@pytest.mark.parametrize("scheme,dtype,threshold", COMPILED_CASES,
                         ids=[f"{s}-{str(d)[6:]}-{t}" for s, d, t in COMPILED_CASES])
def test_compiled_matches_eager_and_reference(scheme, dtype, threshold):
    torch._dynamo.reset()  # one graph per case: the recompile limit can never turn this into eager
    compiled = compiled_pseudo_label_losses()
    inputs = make_inputs(dtype, seed=1)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        got = run(compiled, inputs, threshold=threshold, scheme=scheme)
    assert_same(got, run(pseudo_label_losses, inputs, threshold=threshold, scheme=scheme), dtype)
    assert_same(got, run(reference, inputs, threshold=threshold, scheme=scheme), dtype)


def test_compiled_backward_scales_by_the_incoming_gradients():
    """The fused path saves d loss / d strong and scales it in backward: check weighted losses (lambda_u, an AMP
    scale) and FixMatch's call, which passes one strong tensor as both f_strong and a_strong."""
    torch._dynamo.reset()
    f_weak, a_weak, f_strong, _ = make_inputs(seed=2)
    grads = []
    for fn in (compiled_pseudo_label_losses(), pseudo_label_losses):
        out = fn(f_weak, a_weak, f_strong, f_strong, threshold=TAU, scheme="fixmatch")
        grads.append(torch.autograd.grad(3.0 * out.loss_f + 0.5 * out.loss_a, f_strong)[0])
    assert bool(grads[1].abs().sum() > 0)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_compiled_backward_twice_through_one_graph_fails_loudly():
    """Backward scales the saved gradients in place, so a second backward must error, never scale twice."""
    f_weak, a_weak, f_strong, a_strong = make_inputs(seed=3)
    out = compiled_pseudo_label_losses()(f_weak, a_weak, f_strong, a_strong, threshold=TAU, scheme="cross")
    torch.autograd.grad(out.loss_f + out.loss_a, [f_strong, a_strong], retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(out.loss_f + out.loss_a, [f_strong, a_strong])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_clip_passes_gives_zero_loss_and_gradient(scheme):
    inputs = make_inputs()
    (loss_f, loss_a, mask_f, mask_a, _, _), grads = run(pseudo_label_losses, inputs, threshold=1.01,
                                                        scheme=scheme)
    assert not mask_f.any() and not mask_a.any()
    assert float(loss_f.detach()) == 0.0 and float(loss_a.detach()) == 0.0
    assert all(bool((g == 0).all()) for g in grads)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_all_pass_is_plain_cross_entropy(scheme):
    inputs = make_inputs()
    out = pseudo_label_losses(*inputs, threshold=0.0, scheme=scheme)
    assert out.mask_f.all() and out.mask_a.all()
    torch.testing.assert_close(out.loss_f, F.cross_entropy(inputs[2], out.target_f))
    torch.testing.assert_close(out.loss_a, F.cross_entropy(inputs[3], out.target_a))


def test_loss_is_mean_over_all_clips_not_masked_ones():
    f_weak, a_weak, f_strong, a_strong = make_inputs()
    out = pseudo_label_losses(f_weak, a_weak, f_strong, a_strong, threshold=TAU, scheme="cross")
    ce = F.cross_entropy(f_strong, out.target_f, reduction="none")
    torch.testing.assert_close(out.loss_f, (ce * out.mask_f).sum() / B_U)


def test_threshold_is_inclusive():
    f_weak, a_weak, f_strong, a_strong = make_inputs()
    a_weak[0] = 0.0  # uniform over K: max probability 1 / K
    out = pseudo_label_losses(f_weak, a_weak, f_strong, a_strong, threshold=1 / K, scheme="cross")
    assert bool(out.mask_f[0])
    out = pseudo_label_losses(f_weak, a_weak, f_strong, a_strong, threshold=1 / K + 1e-6, scheme="cross")
    assert not bool(out.mask_f[0])


def test_autocast_does_not_change_the_result():
    """The loop calls Tasks under autocast; the loss must stay float32 math."""
    inputs = make_inputs(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(pseudo_label_losses, inputs, threshold=TAU, scheme="cross")
    assert_same(got, run(pseudo_label_losses, inputs, threshold=TAU, scheme="cross"), torch.bfloat16)


def test_cross_scheme_targets_come_from_the_other_network():
    f_weak, a_weak, f_strong, a_strong = make_inputs()
    out = pseudo_label_losses(f_weak, a_weak, f_strong, a_strong, threshold=TAU, scheme="cross")
    assert torch.equal(out.target_f, a_weak.argmax(-1))
    assert torch.equal(out.target_a, f_weak.argmax(-1))


def test_weak_logits_get_no_gradient():
    f_weak, a_weak, f_strong, a_strong = make_inputs()
    f_weak.requires_grad_()
    a_weak.requires_grad_()
    out = pseudo_label_losses(f_weak, a_weak, f_strong, a_strong, threshold=0.0, scheme="average")
    grads = torch.autograd.grad(out.loss_f + out.loss_a, [f_weak, a_weak, f_strong], allow_unused=True)
    assert grads[0] is None and grads[1] is None
    assert grads[2] is not None and bool(grads[2].abs().sum() > 0)


def test_output_types_for_bf16_inputs():
    out = pseudo_label_losses(*make_inputs(torch.bfloat16), threshold=TAU, scheme="cross")
    assert out.loss_f.dtype == out.loss_a.dtype == torch.float32 and out.loss_f.shape == ()
    assert out.mask_f.dtype == out.mask_a.dtype == torch.bool and out.mask_f.shape == (B_U,)
    assert out.target_f.dtype == out.target_a.dtype == torch.int64


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_unknown_scheme_is_rejected(compile):
    with pytest.raises(ValueError, match="unknown pseudo-label scheme 'crosss'"):
        get_pseudo_label_losses(compile)(*make_inputs(), threshold=TAU, scheme="crosss")


def test_supervised_loss_is_float32_cross_entropy():
    logits = torch.randn(4, K, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    labels = torch.tensor([0, 3, 6, 1])
    loss = supervised_loss(logits, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), labels))


def test_get_pseudo_label_losses_picks_by_flag():
    assert get_pseudo_label_losses(False) is pseudo_label_losses
    assert get_pseudo_label_losses(True) is compiled_pseudo_label_losses()
