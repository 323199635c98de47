"""An exponential moving average of a network's weights and buffers (`optim.ema_decay`), as FixMatch evaluates.

`torch.optim.swa_utils.AveragedModel` does the same arithmetic, but reads its step count from the device
(`if self.n_averaged == 0`) on every update: one host-device sync per training step. Here the count is mirrored
in a Python int, so an update only queues device work. The state dict has AveragedModel's layout
(`module.<name>` and `n_averaged`), which `cmpl.evaluate --weights ema` reads.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn


class WeightEMA(nn.Module):
    """ema = decay * ema + (1 - decay) * current after every step; the first update copies the network."""

    def __init__(self, network: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(network).requires_grad_(False)
        self.decay = float(decay)
        self.register_buffer("n_averaged", torch.zeros((), dtype=torch.long, device=_device_of(network)))
        self._count = 0  # the host's copy of n_averaged

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Fold `network`'s current parameters and buffers into the average (no host-device sync)."""
        ema = [*self.module.parameters(), *self.module.buffers()]
        now = [*network.parameters(), *network.buffers()]
        floats = [(e, c) for e, c in zip(ema, now) if e.is_floating_point()]
        if self._count == 0 or not floats:
            for e, c in zip(ema, now):
                e.copy_(c)
        else:
            torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1.0 - self.decay)
            for e, c in zip(ema, now):
                if not e.is_floating_point():  # BN's num_batches_tracked: the current count
                    e.copy_(c)
        self.n_averaged += 1
        self._count += 1

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state, strict=strict, assign=assign)
        self._count = int(self.n_averaged)  # once, at resume
        return result


def _device_of(network: nn.Module) -> torch.device:
    return next(iter(network.parameters())).device
