"""Losses of CMPL (Xu et al., Eq. 2-5 and Appendix A).

`pseudo_label_losses` is the whole unsupervised part of a step in one function: from the weak-view logits of
the primary network F and the auxiliary network A it builds each network's pseudo-labels (by `scheme`), and
from the strong-view logits the masked cross-entropies. It is plain autograd code, the eager path and the
readable statement of the method.

`compiled_pseudo_label_losses()` is the fused path (`runtime.compile_loss`): the same pseudo-labels and losses
*and* their gradients w.r.t. the strong logits (mask * (softmax - one-hot) / B_u) come out of one
torch.compile'd forward graph, and the backward only scales those saved gradients. No backward graph is
compiled: inductor's compiled backward cost more per call than the whole eager backward (bench/RESULTS.md).

Schemes (Appendix A; l_F is the distribution F's strong view is trained toward, p^X = softmax of X's weak
logits, m_X = 1(max p^X >= tau)):
    cross           l_F = p^A, l_A = p^F                                  (the paper's method, Eq. 4-5)
    self_first      l_F = m_F p^F + (1 - m_F) p^A,  l_A = m_A p^A + (1 - m_A) p^F
    opposite_first  l_F = m_A p^A + (1 - m_A) p^F,  l_A = m_F p^F + (1 - m_F) p^A
    maximum         l_F = l_A = p^F if max p^F >= max p^A else p^A
    average         l_F = l_A = (p^F + p^A) / 2
    fixmatch        l_F = p^F, l_A = p^A                                  (each network its own, Eq. 1)
target_x = argmax l_x, mask_x = max l_x >= tau, loss_x = 1/B_u sum_i mask_x,i * CE(strong_x,i, target_x,i).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

SCHEMES = ("cross", "self_first", "opposite_first", "maximum", "average", "fixmatch")


class PseudoLabelLosses(NamedTuple):
    """Output of `pseudo_label_losses`; B_u = unlabeled batch size."""

    loss_f: Tensor  # () float32, unsupervised loss of F (Eq. 4), mean over all B_u clips
    loss_a: Tensor  # () float32, unsupervised loss of A (Eq. 5)
    mask_f: Tensor  # (B_u,) bool, F's pseudo-label passed the threshold
    mask_a: Tensor  # (B_u,) bool
    target_f: Tensor  # (B_u,) int64, pseudo-label F's strong view is trained toward
    target_a: Tensor  # (B_u,) int64


PseudoLabelFn = Callable[..., PseudoLabelLosses]


def supervised_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of labeled clips (Eq. 2-3), computed in float32.

    logits: (B_l, K) any float dtype; labels: (B_l,) int64. Returns a () float32 tensor.
    """
    return F.cross_entropy(logits.float(), labels)


def _weak_confidence(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(max softmax probability, argmax) per clip of (B, K) float32 logits; no (B, K) probabilities kept."""
    if torch.compiler.is_compiling():
        # For inductor, two passes over each row: max softmax = exp(m - m) / sum_j exp(x_j - m) = 1 / sum,
        # and the argmax as the smallest index holding the max (torch.argmax's tie rule). Inductor's CPU
        # argmax reduction costs ~5x its max; the index min vectorises. NaN rows clamp to a valid class
        # (the loss is NaN anyway, and the trainer stops on it).
        k = logits.shape[-1]
        top = logits.amax(dim=-1, keepdim=True)
        conf = 1.0 / torch.exp(logits - top).sum(dim=-1)
        iota = torch.arange(k, device=logits.device, dtype=torch.int32)
        label = torch.where(logits == top, iota, k).amin(dim=-1).clamp_max(k - 1).long()
        return conf, label
    # Eager: ATen's softmax and max kernels beat the composite above.
    return torch.softmax(logits, dim=-1).max(dim=-1)


def _pseudo_labels(f_weak: Tensor, a_weak: Tensor, threshold: float, scheme: str,
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(mask_f, mask_a, target_f, target_a) of `scheme` from the two weak-view logit tensors (B_u, K)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown pseudo-label scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    f_weak, a_weak = f_weak.detach().float(), a_weak.detach().float()
    if scheme == "average":
        conf, label = ((torch.softmax(f_weak, dim=-1) + torch.softmax(a_weak, dim=-1)) * 0.5).max(dim=-1)
        conf_tf = conf_ta = conf
        label_tf = label_ta = label
    else:
        # Every other scheme picks, per clip, one whole distribution (p^F or p^A): selecting its
        # (max, argmax) pair with torch.where is exactly max/argmax of the selected distribution.
        conf_f, label_f = _weak_confidence(f_weak)
        conf_a, label_a = _weak_confidence(a_weak)
        if scheme == "cross":
            use_f_for_f = torch.zeros_like(conf_f, dtype=torch.bool)
            use_f_for_a = torch.ones_like(use_f_for_f)
        elif scheme == "fixmatch":
            use_f_for_f = torch.ones_like(conf_f, dtype=torch.bool)
            use_f_for_a = torch.zeros_like(use_f_for_f)
        elif scheme == "self_first":
            use_f_for_f = conf_f >= threshold
            use_f_for_a = conf_a < threshold
        elif scheme == "opposite_first":
            use_f_for_f = conf_a < threshold
            use_f_for_a = conf_f >= threshold
        else:  # maximum
            use_f_for_f = use_f_for_a = conf_f >= conf_a
        conf_tf = torch.where(use_f_for_f, conf_f, conf_a)
        label_tf = torch.where(use_f_for_f, label_f, label_a)
        conf_ta = torch.where(use_f_for_a, conf_f, conf_a)
        label_ta = torch.where(use_f_for_a, label_f, label_a)
    return conf_tf >= threshold, conf_ta >= threshold, label_tf, label_ta


def _masked_ce(strong: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """(1 / B_u) sum_i mask_i * CE(strong_i, target_i); strong (B_u, K), float32 math."""
    ce = F.cross_entropy(strong.float(), target, reduction="none")
    # where, not a multiply: an unmasked sample must contribute exactly 0 (and a zero gradient).
    return torch.where(mask, ce, torch.zeros_like(ce)).sum() / strong.shape[0]


def pseudo_label_losses(
    f_weak: Tensor,
    a_weak: Tensor,
    f_strong: Tensor,
    a_strong: Tensor,
    *,
    threshold: float,
    scheme: str = "cross",
) -> PseudoLabelLosses:
    """Cross (or other-scheme) pseudo-label losses of F and A on one unlabeled batch.

    f_weak, a_weak: (B_u, K) logits of F and A on the weak views (no gradient flows into them).
    f_strong, a_strong: (B_u, K) logits on the strong views (the loss gradients flow here).
    Any float dtype; probabilities and losses are computed in float32. `scheme` must be one of SCHEMES
    (a static string: each scheme is its own compiled graph).
    """
    mask_f, mask_a, target_f, target_a = _pseudo_labels(f_weak, a_weak, threshold, scheme)
    return PseudoLabelLosses(
        loss_f=_masked_ce(f_strong, target_f, mask_f),
        loss_a=_masked_ce(a_strong, target_a, mask_a),
        mask_f=mask_f,
        mask_a=mask_a,
        target_f=target_f,
        target_a=target_a,
    )


def _masked_ce_and_grad(strong: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """`_masked_ce` and its gradient w.r.t. `strong`, mask_i * (softmax(strong_i) - onehot(target_i)) / B_u,
    in the dtype of `strong`; written so that inductor computes both in three passes over each row (max,
    exp-sum, gradient) and one gathered load."""
    x = strong.float()
    b, k = x.shape
    top = x.amax(dim=-1, keepdim=True)
    e = torch.exp(x - top)
    total = e.sum(dim=-1, keepdim=True)
    onehot = torch.arange(k, device=x.device, dtype=torch.int32) == target[:, None]
    x_target = x.gather(-1, target[:, None])
    ce = (top + torch.log(total) - x_target).squeeze(-1)
    loss = torch.where(mask, ce, 0.0).sum() / b
    grad = torch.where(mask[:, None], e * (1.0 / total) - onehot.float(), 0.0) * (1.0 / b)
    return loss, grad.to(strong.dtype)


def _losses_and_grads(f_weak: Tensor, a_weak: Tensor, f_strong: Tensor, a_strong: Tensor, threshold: float,
                      scheme: str) -> tuple[Tensor, ...]:
    """The graph torch.compile fuses: PseudoLabelLosses' six fields, then d loss_f/d f_strong, d loss_a/d a_strong."""
    mask_f, mask_a, target_f, target_a = _pseudo_labels(f_weak, a_weak, threshold, scheme)
    loss_f, grad_f = _masked_ce_and_grad(f_strong, target_f, mask_f)
    loss_a, grad_a = _masked_ce_and_grad(a_strong, target_a, mask_a)
    return loss_f, loss_a, mask_f, mask_a, target_f, target_a, grad_f, grad_a


@functools.lru_cache(maxsize=None)
def _compiled_losses_and_grads() -> Callable[..., tuple[Tensor, ...]]:
    # Static shapes: the fastest kernels, and the training B_u never changes (drop_last loaders). One graph
    # per (scheme, dtype, B_u, threshold), all fixed during a run.
    return torch.compile(_losses_and_grads, fullgraph=True, dynamic=False)


class _FusedPseudoLabelLosses(torch.autograd.Function):
    """Forward: the compiled graph, saving the two gradients it returns. Backward: scale them by the incoming
    gradients of loss_f and loss_a (e.g. lambda_u and the AMP loss scale)."""

    @staticmethod
    def forward(ctx, f_weak, a_weak, f_strong, a_strong, threshold, scheme):
        *outputs, grad_f, grad_a = _compiled_losses_and_grads()(f_weak, a_weak, f_strong, a_strong, threshold,
                                                                scheme)
        ctx.save_for_backward(grad_f, grad_a)
        ctx.mark_non_differentiable(*outputs[2:])
        return tuple(outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_loss_f, d_loss_a, *_):
        grad_f, grad_a = ctx.saved_tensors
        # In place: the saved gradients are this node's own buffers, used once (a second backward through
        # the node fails autograd's saved-tensor version check instead of silently scaling twice).
        return None, None, grad_f.mul_(d_loss_f), grad_a.mul_(d_loss_a), None, None


def fused_pseudo_label_losses(
    f_weak: Tensor,
    a_weak: Tensor,
    f_strong: Tensor,
    a_strong: Tensor,
    *,
    threshold: float,
    scheme: str = "cross",
) -> PseudoLabelLosses:
    """`pseudo_label_losses` through one compiled forward graph that also yields the strong-logit gradients.

    Same arguments and results (to float32 rounding; tests/test_losses.py). The first call compiles.
    """
    if scheme not in SCHEMES:  # here too: inside the compiled graph it would surface as a dynamo error
        raise ValueError(f"unknown pseudo-label scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return PseudoLabelLosses(*_FusedPseudoLabelLosses.apply(f_weak, a_weak, f_strong, a_strong, threshold, scheme))


def compiled_pseudo_label_losses() -> PseudoLabelFn:
    """The fused, torch.compile'd `pseudo_label_losses` (the `runtime.compile_loss` path)."""
    return fused_pseudo_label_losses


def get_pseudo_label_losses(compile: bool) -> PseudoLabelFn:
    """The compiled (`compile=True`) or eager `pseudo_label_losses`."""
    return compiled_pseudo_label_losses() if compile else pseudo_label_losses
