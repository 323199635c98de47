"""Run the Fig. 5 probe on a run folder: load F (and A) from a checkpoint, score the eval loader's clips at
every stride, and plot top-1 and drop ratio per stride. Kept apart from temporal.py so the resampling rule
can be tested without DALI."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .plots import plt, save_figure
from .runs import AnalysisError
from .temporal import StrideResult, drop_ratios, stride_accuracies

from cmpl.registry import ROLES

NETWORK_LABEL = {name: role.label for name, role in ROLES.items()}


def checkpoint_path(run: Path, checkpoint: str) -> Path:
    """`last` / `best` -> RUN/checkpoints/<name>.pt; anything else is taken as a path."""
    path = run / "checkpoints" / f"{checkpoint}.pt" if checkpoint in ("last", "best") else Path(checkpoint)
    if not path.is_file():
        raise AnalysisError(f"{path}: missing checkpoint")
    return path


def probe_run(run: Path, *, networks: Sequence[str] | None, strides: Sequence[int], checkpoint: str = "last",
              batch_size: int | None = None, clips: int | None = None, crops: int | None = None,
              data_root: str | None = None) -> dict[str, list[StrideResult]]:
    """Top-1 per stride for each network of the run's checkpoint, on the val set of the run's dataset.

    Each network is fed clips of its own (frames, stride) from the run config (F: data.primary, A:
    data.aux), with the config's test views (data.eval_clips x data.eval_crops, eval crop and short side)
    unless `clips`/`crops` say otherwise. Networks are loaded by cmpl.evaluate's own loader code.
    """
    from cmpl import checkpoint as ckpt_io
    from cmpl import config as cfg_mod
    from cmpl import evaluate, runtime
    from pipelines.dataset import DatasetError

    path = checkpoint_path(run, checkpoint)
    overrides = [(k, str(v)) for k, v in (("data.root", data_root), ("data.eval_clips", clips),
                                          ("data.eval_crops", crops), ("data.eval_batch", batch_size))
                 if v is not None]
    try:
        held = list(ckpt_io.load(path).get("models", {"primary": None}))
        networks = list(networks or held)
        results = {}
        for net_name in networks:
            net, cfg, _ = evaluate.load_network(path, net_name, overrides)
            if not (Path(cfg.data.root) / "val.csv").is_file():
                raise AnalysisError(f"{cfg.data.root}: no val.csv (give --data-root, the run's dataset folder)")
            device = runtime.resolve_device(cfg.runtime.device)
            frames_stride = evaluate.network_clip(cfg, net_name)
            loader = evaluate.eval_loader(cfg.data, frames_stride=frames_stride, official=True)
            results[net_name] = stride_accuracies(net, loader, strides, device)
    except (cfg_mod.ConfigError, ckpt_io.CheckpointError, DatasetError) as err:
        raise AnalysisError(str(err)) from None
    return results


def plot_temporal(results: dict[str, list[StrideResult]], out: str | os.PathLike) -> Path:
    """Two panels over stride: top-1 and the drop ratio (acc_1 - acc_s) / acc_1, one line per network."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for net, res in results.items():
        strides = [r.stride for r in res]
        drops = drop_ratios(res)
        ax1.plot(strides, [r.top1 for r in res], marker="o", label=NETWORK_LABEL.get(net, net))
        ax2.plot(strides, [100 * drops[s] for s in strides], marker="o", label=NETWORK_LABEL.get(net, net))
    for ax, ylabel in ((ax1, "top-1 [%]"), (ax2, "accuracy drop ratio [%]")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([r.stride for r in next(iter(results.values()))])
        ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("resampling stride s (frame i -> floor(i/s)*s)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Temporal resampling probe (paper Fig. 5)")
    return save_figure(fig, out)
