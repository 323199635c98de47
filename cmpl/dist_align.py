"""Distribution alignment of weak-view predictions (ReMixMatch, Berthelot et al. 2020, Sec. 3.2), as an option.

With few labels, a network's confident weak predictions can pile onto a few classes; its own pseudo-labels
then teach it to predict those classes more (FixMatch's collapse: results/study_digits_wide, split 1, class
`five` at 6%). Alignment rescales each weak prediction by how far the network's running mean prediction has
drifted from the class prior:

    p~ = normalize(p * prior / p_model),   p_model <- m * p_model + (1 - m) * mean over the batch of p,

with a uniform prior (class-balanced sets; a uniform factor cancels in the normalisation, so it is dropped).
`method.dist_align` is m; 0 turns it off. ReMixMatch averages the last 128 batches: m = 0.99 is a window of
about 100 steps.

The aligned prediction is returned as log-probabilities, which are logits of p~: the pseudo-label losses
(eager or compiled) take them unchanged. One running mean per network; under DDP it is averaged over the
ranks (an all_reduce, no host sync), so every rank holds the same state and a checkpoint restores it exactly.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor


class DistributionAlignment:
    """The running mean prediction of one network and the alignment it applies; see the module docstring."""

    def __init__(self, num_classes: int, momentum: float) -> None:
        if num_classes < 1:
            raise ValueError(f"distribution alignment needs the class count, got {num_classes}")
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"distribution alignment momentum must be in (0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.p_model = torch.full((num_classes,), 1.0 / num_classes)  # starts at the (uniform) prior

    @torch.no_grad()
    def __call__(self, weak_logits: Tensor) -> Tensor:
        """(B_u, K) weak logits -> (B_u, K) float32 log p~; updates the running mean first (as ReMixMatch)."""
        log_p = torch.log_softmax(weak_logits.detach().float(), dim=-1)
        batch_mean = log_p.exp().mean(dim=0)
        if torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.all_reduce(batch_mean)
            batch_mean /= torch_dist.get_world_size()
        if self.p_model.device != batch_mean.device:  # first call, or after a load on the CPU
            self.p_model = self.p_model.to(batch_mean.device)
        self.p_model.mul_(self.momentum).add_(batch_mean, alpha=1.0 - self.momentum)
        aligned = log_p - self.p_model.log()
        return aligned - torch.logsumexp(aligned, dim=-1, keepdim=True)

    def state_dict(self) -> dict[str, Any]:
        return {"p_model": self.p_model.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        p = state["p_model"]
        if p.shape != self.p_model.shape:
            raise ValueError(f"distribution alignment state has {p.shape[0]} classes, the run {self.p_model.shape[0]}")
        self.p_model = p.to(self.p_model.device, torch.float32).clone()
