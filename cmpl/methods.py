"""One Task per method: it owns the forward passes and losses of a training step; the loop never branches
on the method. `build_task(method_cfg, networks)` picks the Task of `method_cfg.name`; `networks` maps each
role the method declares in `cmpl.registry.METHODS` (primary, aux) to its module, the same module for both
roles when the auxiliary shares the primary's weights.

A Task is called once per step, `task(labeled, unlabeled) -> dict[str, Tensor]`:
    labeled   {"primary": (B_l, C, T_F, H, W), "aux": (B_l, C, T_A, H, W), "label": (B_l,) int64}
    unlabeled {"primary_weak", "primary_strong": (B_u, C, T_F, H, W),
               "aux_weak", "aux_strong": (B_u, C, T_A, H, W), "label": (B_u,) int64}
The unlabeled "label" is the hidden truth, used for statistics only and never for a loss.
The result holds "loss" (the total to backward) and detached () statistics tensors: loss_s_f, loss_s_a,
loss_u_f, loss_u_a, mask_f, mask_a, pl_acc_f, pl_acc_a, correct_pl_f, correct_pl_a (keys that do not
apply to a method are absent). Nothing here calls .item() or otherwise syncs with the device: the loop
reduces the statistics on log steps. Autocast and channels_last_3d are the loop's business.

Statistics for network x (x = f for F, a for A; "pseudo-label for x" = the target x's strong view is trained
toward, which under the cross scheme comes from the OTHER network):
    mask_x        fraction of the B_u clips whose pseudo-label for x passed the threshold
    pl_acc_x      accuracy of those masked pseudo-labels against the hidden labels (0 when none passed)
    correct_pl_x  (#masked and correct) / B_u, the ratio of the paper's Fig. 2

Weak views and BatchNorm: the weak views go through each network under torch.no_grad() but in TRAIN mode,
as in FixMatch, where the weak batch is part of the training forward. Eval-mode BN would normalize with the
running estimates, which are poor early in training and are not the function the strong view is trained
in, so pseudo-label confidences (and the threshold's meaning) would drift from the trained model's. The
consequences, accepted: BN normalizes the weak batch with its own statistics and updates the running stats
once more per step (so they track weak views, the views closest to evaluation's center crops, as well as
labeled + strong ones). Dropout is active in the weak forward too unless `method.weak_forward` is
"no_dropout", which switches dropout layers off for it (the pseudo-label is then the network's
deterministic prediction, not one dropout sample). The no_grad forward
stores no activations, which a joint labeled + weak + strong forward would.

With `method.dist_align` > 0 each network's weak prediction is distribution-aligned (cmpl/dist_align.py)
before it becomes a pseudo-label; the Task then has state (`state_dict`), saved in checkpoints.

With `method.lambda_warmup_steps` > 0 the unsupervised weight ramps linearly from 0 to lambda_u over that many
steps; the loop sets `task.step` (optimizer steps done so far) before each call, and the result then holds
the weight used as "lambda_u". The step is the trainer's (checkpointed there), so a resume ramps on exactly.

Labeled and strong views go through each network in ONE forward (concatenated along N, split back), so BN
sees one batch of B_l + B_u clips and a step costs one weak and one training forward per network.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from cmpl import registry
from cmpl.dist_align import DistributionAlignment
from cmpl.losses import SCHEMES, PseudoLabelFn, get_pseudo_label_losses, supervised_loss


def _get(batch: Mapping[str, Tensor] | None, key: str, which: str) -> Tensor:
    if batch is None:
        raise ValueError(f"this method needs a {which} batch, got None")
    if key not in batch:
        raise KeyError(f"{which} batch has no {key!r} (keys: {', '.join(sorted(batch))})")
    return batch[key]


@contextlib.contextmanager
def _weak_mode(net: nn.Module, weak_forward: str) -> Iterator[None]:
    """No gradient; with "no_dropout", dropout layers off (BN stays in train mode) for the weak forward."""
    dropouts = [m for m in net.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.training] \
        if weak_forward == "no_dropout" else []
    for m in dropouts:
        m.train(False)
    try:
        with torch.no_grad():
            yield
    finally:
        for m in dropouts:
            m.train(True)


def _forward_joint(net: nn.Module, labeled: Tensor, strong: Tensor) -> tuple[Tensor, Tensor]:
    """One forward of labeled (B_l, ...) and strong (B_u, ...) clips; returns their (B, K) logits."""
    if labeled.shape[1:] != strong.shape[1:]:
        raise ValueError(
            f"labeled clips {tuple(labeled.shape[1:])} and strong unlabeled clips "
            f"{tuple(strong.shape[1:])} must have the same (C, T, H, W) to share a forward"
        )
    logits = net(torch.cat([labeled, strong], dim=0))
    return logits[: labeled.shape[0]], logits[labeled.shape[0]:]


def pseudo_label_stats(mask: Tensor, target: Tensor, label: Tensor, suffix: str) -> dict[str, Tensor]:
    """mask_x, pl_acc_x, correct_pl_x (see module docstring) as () float32 tensors, without a sync.

    mask: (B_u,) bool; target, label: (B_u,) int64.
    """
    correct = mask & (target == label.to(target.device, non_blocking=True))
    n_correct = correct.sum().float()
    return {
        f"mask_{suffix}": mask.float().mean(),
        f"pl_acc_{suffix}": n_correct / mask.sum().clamp(min=1).float(),
        f"correct_pl_{suffix}": n_correct / mask.shape[0],
    }


def _finish(loss: Tensor, stats: dict[str, Tensor]) -> dict[str, Tensor]:
    return {"loss": loss, **{k: v.detach() for k, v in stats.items()}}


class _Task:
    """What every Task shares: its registry entry and the modules of its roles."""

    spec: registry.MethodSpec

    def __init__(self, networks: Mapping[str, nn.Module], *, dist_align: float = 0.0, num_classes: int = 0,
                 lambda_u: float = 0.0, lambda_warmup_steps: int = 0) -> None:
        missing = [r for r in self.spec.roles if r not in networks]
        if missing:
            raise ValueError(f"method {self.spec.name!r} needs networks for roles {', '.join(missing)}")
        self.networks: dict[str, nn.Module] = {r: networks[r] for r in self.spec.roles}
        # One aligner per network whose weak view makes pseudo-labels (none for supervised training).
        self.aligners: dict[str, DistributionAlignment] = (
            {r: DistributionAlignment(num_classes, dist_align) for r in self.spec.roles}
            if dist_align > 0 and self.spec.uses_unlabeled else {})
        self.lambda_u, self.lambda_warmup_steps = float(lambda_u), int(lambda_warmup_steps)
        self.step = 0  # optimizer steps done before this call; set by the training loop

    def _unlabeled_weight(self, stats: dict[str, Tensor], like: Tensor) -> float:
        """lambda at `self.step` (a host float: no sync); recorded in `stats` while it ramps."""
        if self.lambda_warmup_steps <= 0:
            return self.lambda_u
        weight = self.lambda_u * min(1.0, self.step / self.lambda_warmup_steps)
        stats["lambda_u"] = like.new_full((), weight, dtype=torch.float32)
        return weight

    def _align(self, role: str, weak_logits: Tensor) -> Tensor:
        return self.aligners[role](weak_logits) if role in self.aligners else weak_logits

    def state_dict(self) -> dict[str, Any]:
        """The Task's own state (the aligners' running means); empty without distribution alignment."""
        return {f"dist_align_{r}": a.state_dict() for r, a in self.aligners.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for r, a in self.aligners.items():
            if f"dist_align_{r}" in state:  # absent: a run that turned alignment on at resume starts it afresh
                a.load_state_dict(state[f"dist_align_{r}"])

    @property
    def uses_unlabeled(self) -> bool:
        return self.spec.uses_unlabeled


class SupervisedTask(_Task):
    """Labeled clips only, primary network F only: L = L_s^F."""

    spec = registry.METHODS["supervised"]

    def __init__(self, networks: Mapping[str, nn.Module], **_: Any) -> None:
        super().__init__(networks)  # no unlabeled clips: no aligners either

    def __call__(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None = None,
                 ) -> dict[str, Tensor]:
        logits = self.networks["primary"](_get(labeled, "primary", "labeled"))
        loss_s_f = supervised_loss(logits, _get(labeled, "label", "labeled"))
        return _finish(loss_s_f, {"loss_s_f": loss_s_f})


class FixMatchTask(_Task):
    """FixMatch on the primary clips (Eq. 1): F's own confident weak predictions teach its strong view.

    L = L_s^F + lambda_u * L_u^F.
    """

    spec = registry.METHODS["fixmatch"]

    def __init__(self, networks: Mapping[str, nn.Module], *, threshold: float, lambda_u: float,
                 loss_fn: PseudoLabelFn, weak_forward: str = "train", dist_align: float = 0.0,
                 num_classes: int = 0, lambda_warmup_steps: int = 0, **_: Any) -> None:
        super().__init__(networks, dist_align=dist_align, num_classes=num_classes, lambda_u=lambda_u,
                         lambda_warmup_steps=lambda_warmup_steps)
        self.weak_forward = weak_forward
        self.threshold = float(threshold)
        self.loss_fn = loss_fn

    def __call__(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None,
                 ) -> dict[str, Tensor]:
        net = self.networks["primary"]
        with _weak_mode(net, self.weak_forward):  # BN in train mode on purpose: see the module docstring
            f_weak = net(_get(unlabeled, "primary_weak", "unlabeled"))
        f_weak = self._align("primary", f_weak)
        f_l, f_strong = _forward_joint(net, _get(labeled, "primary", "labeled"),
                                       _get(unlabeled, "primary_strong", "unlabeled"))
        loss_s_f = supervised_loss(f_l, _get(labeled, "label", "labeled"))
        # scheme "fixmatch" with F in both slots: l_F = p^F; the A half of the result is unused.
        pl = self.loss_fn(f_weak, f_weak, f_strong, f_strong, threshold=self.threshold, scheme="fixmatch")
        stats = {"loss_s_f": loss_s_f, "loss_u_f": pl.loss_f,
                 **pseudo_label_stats(pl.mask_f, pl.target_f, _get(unlabeled, "label", "unlabeled"), "f")}
        return _finish(loss_s_f + self._unlabeled_weight(stats, loss_s_f) * pl.loss_f, stats)


class CMPLTask(_Task):
    """Cross-Model Pseudo-Labeling (Eq. 2-6): L = (L_s^F + L_s^A) + lambda_u (L_u^F + L_u^A).

    `aux_supervised` / `aux_unsupervised` (Table 6) drop L_s^A / L_u^A; A's forward on the clips a dropped
    term would use is skipped too. A always predicts pseudo-labels for F on its weak view, so it stays in
    `networks` (checkpointed) even when both toggles are off and it receives no gradient. With a
    weight-shared auxiliary (networks["aux"] is networks["primary"]) the one network sees both clips.
    """

    spec = registry.METHODS["cmpl"]

    def __init__(self, networks: Mapping[str, nn.Module], *, threshold: float, lambda_u: float,
                 scheme: str = "cross", aux_supervised: bool = True, aux_unsupervised: bool = True,
                 loss_fn: PseudoLabelFn, weak_forward: str = "train", dist_align: float = 0.0,
                 num_classes: int = 0, lambda_warmup_steps: int = 0) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown pseudo-label scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
        super().__init__(networks, dist_align=dist_align, num_classes=num_classes, lambda_u=lambda_u,
                         lambda_warmup_steps=lambda_warmup_steps)
        self.threshold = float(threshold)
        self.scheme = scheme
        self.aux_supervised = bool(aux_supervised)
        self.aux_unsupervised = bool(aux_unsupervised)
        self.loss_fn = loss_fn
        self.weak_forward = weak_forward

    def _aux_forward(self, labeled: Tensor, strong: Tensor) -> tuple[Tensor | None, Tensor | None]:
        net = self.networks["aux"]
        if self.aux_supervised and self.aux_unsupervised:
            return _forward_joint(net, labeled, strong)
        if self.aux_supervised:
            return net(labeled), None
        if self.aux_unsupervised:
            return None, net(strong)
        return None, None

    def __call__(self, labeled: Mapping[str, Tensor], unlabeled: Mapping[str, Tensor] | None,
                 ) -> dict[str, Tensor]:
        f_net, a_net = self.networks["primary"], self.networks["aux"]
        with _weak_mode(f_net, self.weak_forward):  # BN in train mode on purpose: see the module docstring
            f_weak = f_net(_get(unlabeled, "primary_weak", "unlabeled"))
        with _weak_mode(a_net, self.weak_forward):
            a_weak = a_net(_get(unlabeled, "aux_weak", "unlabeled"))
        f_weak, a_weak = self._align("primary", f_weak), self._align("aux", a_weak)
        label_l = _get(labeled, "label", "labeled")
        f_l, f_strong = _forward_joint(f_net, _get(labeled, "primary", "labeled"),
                                       _get(unlabeled, "primary_strong", "unlabeled"))
        a_l, a_strong = self._aux_forward(_get(labeled, "aux", "labeled"),
                                          _get(unlabeled, "aux_strong", "unlabeled"))
        # Without A's strong forward, a_weak stands in (no gradient); loss_a is then ignored.
        pl = self.loss_fn(f_weak, a_weak, f_strong, a_weak if a_strong is None else a_strong,
                          threshold=self.threshold, scheme=self.scheme)
        loss_s_f = supervised_loss(f_l, label_l)
        stats: dict[str, Tensor] = {"loss_s_f": loss_s_f, "loss_u_f": pl.loss_f}
        sup, unsup = loss_s_f, pl.loss_f
        if a_l is not None:
            stats["loss_s_a"] = supervised_loss(a_l, label_l)
            sup = sup + stats["loss_s_a"]
        if a_strong is not None:
            stats["loss_u_a"] = pl.loss_a
            unsup = unsup + pl.loss_a
        hidden = _get(unlabeled, "label", "unlabeled")
        stats.update(pseudo_label_stats(pl.mask_f, pl.target_f, hidden, "f"))
        stats.update(pseudo_label_stats(pl.mask_a, pl.target_a, hidden, "a"))
        return _finish(sup + self._unlabeled_weight(stats, loss_s_f) * unsup, stats)


TASKS: dict[str, type[_Task]] = {t.spec.name: t for t in (SupervisedTask, FixMatchTask, CMPLTask)}


def build_task(method_cfg: Any, networks: Mapping[str, nn.Module], *, compile_loss: bool = False,
               num_classes: int = 0) -> _Task:
    """The Task of `method_cfg.name` (a key of cmpl.registry.METHODS).

    method_cfg: any object with name, scheme, threshold, lambda_u, aux_supervised, aux_unsupervised (and
    optionally weak_forward, dist_align, lambda_warmup_steps).
    networks: {role: module} for (at least) the roles the method declares; extra roles are ignored.
    compile_loss: use the fused, torch.compile'd pseudo-label loss.
    num_classes: K, needed only with method.dist_align > 0.
    """
    spec = registry.method(method_cfg.name)
    return TASKS[spec.name](networks, threshold=method_cfg.threshold, lambda_u=method_cfg.lambda_u,
                            scheme=method_cfg.scheme, aux_supervised=method_cfg.aux_supervised,
                            aux_unsupervised=method_cfg.aux_unsupervised,
                            loss_fn=get_pseudo_label_losses(compile_loss),
                            weak_forward=getattr(method_cfg, "weak_forward", "train"),
                            dist_align=getattr(method_cfg, "dist_align", 0.0), num_classes=num_classes,
                            lambda_warmup_steps=getattr(method_cfg, "lambda_warmup_steps", 0))
