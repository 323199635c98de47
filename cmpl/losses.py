"""Losses of CMPL (Xu et al., Eq. 2-5 and Appendix A).

`pseudo_label_losses` is the whole unsupervised part of a step in one function: from the weak-view logits of
the primary network F and the auxiliary network A it builds each network's pseudo-labels (by `scheme`), and
from the strong-view logits the masked cross-entropies. It is written for torch.compile (one graph, no
host-device sync, no branching on tensor values); `compiled_pseudo_label_losses()` returns that compiled
version, which fuses the softmaxes, reductions and the masked CE into one forward and one backward kernel.

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


def _cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-clip CE, (B, K) float32 logits and (B,) targets -> (B,)."""
    if torch.compiler.is_compiling():
        # For inductor: logsumexp - gather fuses into the same row passes as the weak-view reductions,
        # and its backward is one elementwise kernel (softmax - one-hot); F.cross_entropy's nll_loss
        # backward instead becomes a strided reduction over the classes (measured ~20% slower on CPU).
        return torch.logsumexp(logits, dim=-1) - logits.gather(-1, target[:, None]).squeeze(-1)
    # Eager: ATen's fused log_softmax + nll_loss kernels beat the composite logsumexp.
    return F.cross_entropy(logits, target, reduction="none")


def _masked_ce(strong: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """(1 / B_u) sum_i mask_i * CE(strong_i, target_i); strong (B_u, K), float32 math."""
    ce = _cross_entropy(strong.float(), target)
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
    if scheme not in SCHEMES:
        raise ValueError(f"unknown pseudo-label scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    p_f = torch.softmax(f_weak.detach().float(), dim=-1)
    p_a = torch.softmax(a_weak.detach().float(), dim=-1)
    if scheme == "average":
        conf, label = ((p_f + p_a) * 0.5).max(dim=-1)
        conf_tf = conf_ta = conf
        label_tf = label_ta = label
    else:
        # Every other scheme picks, per clip, one whole distribution (p^F or p^A): selecting its
        # (max, argmax) pair with torch.where is exactly max/argmax of the selected distribution.
        conf_f, label_f = p_f.max(dim=-1)
        conf_a, label_a = p_a.max(dim=-1)
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
    mask_f = conf_tf >= threshold
    mask_a = conf_ta >= threshold
    return PseudoLabelLosses(
        loss_f=_masked_ce(f_strong, label_tf, mask_f),
        loss_a=_masked_ce(a_strong, label_ta, mask_a),
        mask_f=mask_f,
        mask_a=mask_a,
        target_f=label_tf,
        target_a=label_ta,
    )


@functools.lru_cache(maxsize=None)
def compiled_pseudo_label_losses() -> PseudoLabelFn:
    """`pseudo_label_losses` compiled with torch.compile: one fused forward and one backward kernel.

    Compilation happens on the first call and again for each new (scheme, dtype, B_u, threshold), all
    fixed during a run: static shapes give the fastest kernels and the training B_u never changes
    (drop_last loaders). Eager and compiled agree to float32 rounding (tests/test_losses.py).
    """
    return torch.compile(pseudo_label_losses, fullgraph=True, dynamic=False)


def get_pseudo_label_losses(compile: bool) -> PseudoLabelFn:
    """The compiled (`compile=True`) or eager `pseudo_label_losses`."""
    return compiled_pseudo_label_losses() if compile else pseudo_label_losses
