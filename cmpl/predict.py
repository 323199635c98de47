"""Top-k actions of video files with a trained network; no dataset folder needed.

    python -m cmpl.predict clip.mp4 --checkpoint runs/X/checkpoints/primary.pt
    python -m cmpl.predict a.mp4 b.avi --checkpoint runs/X/checkpoints/last.pt --network aux --topk 3 --json
    python -m cmpl.predict clip.mp4 --checkpoint CKPT --clips 10 --crops 3 --fps 30 --data.device=cpu

Any file ffmpeg reads. DALI reads a file as it is when the loader's backend decodes its codec (CPU:
VP8/VP9/MJPEG; GPU also H.264/HEVC/AV1/MPEG-4) and its frames already lie on the training frame-rate grid
(constant rate, square pixels); otherwise preprocess's own converter (`preprocess.encode.encode_file`: CFR
at the training fps, the eval short side, VP9) writes it into a temporary folder first, deleted afterwards,
and the output says "converted". Clips and crops are cmpl.evaluate's: the same `EvalLoader` with the
config's data.eval_clips x data.eval_crops (10 x 3 in the paper presets; --clips/--crops change them) and
the same softmax averaged over the views. A video shorter than one clip is padded with its last frame, as
in evaluation, and the output says so.

Output: per file its name and the top-k classes with probabilities; `--json`: one JSON object per line per
file (a failed file: {"file", "error"}). Class names: the checkpoint's "classes", else DATA_ROOT/classes.txt.
Training frame rate: --fps, else the checkpoint's "fps", else DATA_ROOT/meta.json, else the video's own.
Config overrides go as `--section.key=value` (the `=` is needed here). Exit code 0; 2 on a user error or
when the only file fails; 1 when some of several files failed (each named on stderr in one line).
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch import nn

from cmpl import checkpoint as ckpt_io
from cmpl import cli
from cmpl import config as cfg_mod
from cmpl import registry, runtime
from cmpl.evaluate import class_names, load_network, network_clip, video_probabilities

VALUE_OPTIONS = ("checkpoint", "network", "topk", "clips", "crops", "fps")
FLAGS = ("json",)
# Codecs DALI's 'mixed' (NVDEC) backend decodes besides the CPU backend's (DALI's fn.decoders.video docs).
GPU_ONLY_CODECS = ("h264", "hevc", "av1", "mpeg4")
# A file is read as it is only if its average rate is within this of the training rate.
RATE_TOLERANCE = 1e-3


class PredictError(ValueError):
    """One input file cannot be predicted; the message names the file and the reason (one line)."""


def checkpoint_classes(ckpt: dict, cfg: cfg_mod.Config) -> tuple[list[str], bool]:
    """(class names, whether they are real names): the checkpoint's "classes", else DATA_ROOT/classes.txt,
    else "0".."K-1"."""
    k = cfg.model.num_classes
    names = ckpt.get("classes")
    if isinstance(names, (list, tuple)) and len(names) == k and all(isinstance(n, str) for n in names):
        return list(names), True
    names = class_names(cfg.data.root, k)
    return names, names != [str(i) for i in range(k)]


def training_fps(ckpt: dict, cfg: cfg_mod.Config) -> Fraction | None:
    """The frame rate the network was trained at: the checkpoint's "fps", else DATA_ROOT/meta.json."""
    value = ckpt.get("fps")
    if value is None:
        try:
            value = json.loads((Path(cfg.data.root) / "meta.json").read_text()).get("fps")
        except (OSError, ValueError, AttributeError):
            value = None
    try:
        fps = Fraction(str(value)).limit_denominator(100000) if value is not None else None
    except (ValueError, ZeroDivisionError):
        return None
    return fps if fps is not None and fps > 0 else None


def backend_codecs(device: str) -> tuple[str, ...]:
    """Codec names (FFmpeg's canonical ones) the DALI backend of the loaders' `device` ("cpu" | "cuda")
    decodes."""
    from pipelines.loaders import CPU_CODECS

    return tuple(CPU_CODECS) + (GPU_ONLY_CODECS if device != "cpu" else ())


@dataclass(frozen=True)
class StreamFacts:
    """What decides whether DALI can read a file as it is (from the container, nothing decoded)."""

    codec: str
    rate: Fraction | None  # average frame rate
    sar: Fraction | None
    packet_slots: list[int]  # each frame packet's timestamp, in frame periods of the rate tested


def stream_facts(path: Path, rate: Fraction | None) -> StreamFacts:
    """Demux `path`'s video stream: codec, average rate, SAR, and the timestamps of its frame packets in
    periods of `rate` (the stream's average rate when None). CFR on that grid: slots 0, 1, 2, ..."""
    import av

    with av.open(str(path)) as container:
        st = container.streams.video[0]
        avg = Fraction(st.average_rate) if st.average_rate else None
        grid = rate or avg
        pts = sorted(p.pts for p in container.demux(st) if p.pts is not None and p.size)
        sar = st.codec_context.sample_aspect_ratio
        slots = ([round(float((t - pts[0]) * st.time_base * grid)) for t in pts] if pts and grid else [])
        return StreamFacts(st.codec_context.codec.canonical_name, avg, Fraction(sar) if sar else None, slots)


def reads_as_is(facts: StreamFacts, num_frames: int, fps: Fraction | None, device: str) -> bool:
    """Whether the loader may read the file without conversion: a codec the backend decodes, square pixels,
    the training rate (when known), and one packet per frame, each on its own slot of that rate's grid."""
    if facts.codec not in backend_codecs(device) or facts.sar not in (None, 0, 1) or facts.rate is None:
        return False
    if fps is not None and abs(facts.rate / fps - 1) > RATE_TOLERANCE:
        return False
    return len(facts.packet_slots) == num_frames and facts.packet_slots == list(range(num_frames))


@dataclass
class Prepared:
    """A file ready for the eval loader: its record (of the original or of the converted file)."""

    record: Any  # pipelines.dataset.VideoRecord
    converted: str | None  # what conversion was done, or None when read as it is
    notes: list[str] = field(default_factory=list)


def prepare(path: Path, workdir: Path, *, fps: Fraction | None, short_side: int, device: str,
            index: int) -> Prepared:
    """Probe `path` and convert it (into `workdir`) when the loader cannot read it as it is.

    Raises PredictError naming the file: missing, empty, not a video, no frames, conversion failed.
    """
    import av

    from pipelines.dataset import VideoRecord
    from preprocess import encode

    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    try:
        encode.probe_source(path)  # empty / not a video / no video stream
        facts = stream_facts(path, fps)
        target = fps or facts.rate
        notes = [] if fps else [f"training frame rate unknown (no --fps, none in the checkpoint): "
                                f"using the video's own, {float(target or 0):.3f} fps"]
        as_is = None
        if facts.codec in backend_codecs(device):
            try:
                info = encode.probe_output(path)  # decodes it all: the true frame count
            except encode.EncodeError:
                info = None  # let the converter try it, and say what is wrong with it
            as_is = info if info is not None and reads_as_is(facts, info.num_frames, fps, device) else None
        if as_is is not None:
            rec = VideoRecord(path, path.name, 0, as_is.num_frames, float(facts.rate), as_is.width, as_is.height)
            return Prepared(rec, None, notes)
        if target is None:
            raise encode.EncodeError("unknown frame rate; pass --fps")
        settings = encode.EncodeSettings(codec="vp9", fps=target, short_side=short_side)
        dst = workdir / f"{index}{settings.ext}"
        info = encode.encode_file(path, dst, settings)
    except encode.EncodeError as e:
        why = str(e)
        if "received no packets" in why:  # ffmpeg's words for an input that yields no frame at all
            why = "no frames decoded (zero frames)"
        raise PredictError(f"{path}: {why}") from None
    except (av.error.FFmpegError, IndexError, OSError) as e:  # demuxing a broken file
        raise PredictError(f"{path}: unreadable: {getattr(e, 'strerror', None) or e}".splitlines()[0]) from None
    what = (f"converted from {facts.codec} at {float(facts.rate or 0):.3f} fps to VP9 at {float(target):.3f} fps, "
            f"short side {short_side}")
    rec = VideoRecord(dst, path.name, 0, info.num_frames, float(target), info.width, info.height)
    return Prepared(rec, what, notes)


@dataclass
class Predictor:
    """A loaded network and how its clips are cut (cmpl.evaluate's protocol)."""

    net: nn.Module
    cfg: cfg_mod.Config
    network: str
    checkpoint: str
    classes: list[str]
    fps: Fraction | None
    clips: int
    crops: int
    device: torch.device
    loader_device: str
    autocast: Callable[[], ContextManager]

    @property
    def clip(self) -> tuple[int, int]:
        return network_clip(self.cfg, self.network)

    @torch.no_grad()
    def probabilities(self, record: Any) -> torch.Tensor:
        """`(K,)` mean softmax over clips x crops of one video, through the eval loader."""
        from pipelines.loaders import EvalLoader

        d = self.cfg.data
        frames, stride = self.clip
        loader = EvalLoader([record], batch_size=1, device=self.loader_device, clips=self.clips,
                            crops=self.crops, crop_size=d.eval_crop_size, short_side=d.eval_short_side,
                            with_indices=False, frames=frames, stride=stride, rank=0, world_size=1,
                            num_threads=d.num_threads)
        self.net.eval()
        (probs,) = [video_probabilities(self.net, b["video"].to(self.device), autocast=self.autocast,
                                        channels_last=self.cfg.runtime.channels_last)[0] for b in loader]
        return probs.cpu()


def load_predictor(path: str | Path, network: str = "primary", overrides: Sequence[tuple[str, str | None]] = (),
                   *, clips: int | None = None, crops: int | None = None,
                   fps: Fraction | None = None) -> tuple[Predictor, list[str]]:
    """The checkpoint's network on its device, and warnings (e.g. no class names). Raises CheckpointError."""
    from pipelines.device import resolve_device

    net, cfg, ckpt = load_network(path, network, overrides)
    device = runtime.resolve_device(cfg.runtime.device)
    net = net.to(device)
    if cfg.runtime.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    classes, named = checkpoint_classes(ckpt, cfg)
    warnings = [] if named else [f"{path} carries no class names and {cfg.data.root}/classes.txt is not "
                                 "readable: printing label numbers"]
    try:
        ldev = resolve_device(cfg.data.device)
    except ValueError as e:
        raise cfg_mod.ConfigError(str(e)) from None
    pred = Predictor(net=net, cfg=cfg, network=network, checkpoint=str(path), classes=classes,
                     fps=fps or training_fps(ckpt, cfg), clips=clips or cfg.data.eval_clips,
                     crops=crops or cfg.data.eval_crops, device=device, loader_device=ldev,
                     autocast=runtime.autocast_factory(runtime.resolve_amp(cfg.runtime.amp, device), device))
    return pred, warnings


def predict_file(pred: Predictor, path: Path, workdir: Path, *, topk: int, index: int = 0) -> dict[str, Any]:
    """Top-k of one file as a JSON-ready dict; PredictError (one line naming the file) on bad input."""
    from pipelines.dataset import DatasetError

    d = pred.cfg.data
    prep = prepare(path, workdir, fps=pred.fps, short_side=d.eval_short_side, device=pred.loader_device,
                   index=index)
    frames, stride = pred.clip
    span = (frames - 1) * stride + 1
    n = prep.record.num_frames
    if n < span:
        prep.notes.append(f"shorter than one clip ({n} frames < {span}): padded with its last frame, "
                          "as cmpl.evaluate does")
    try:
        probs = pred.probabilities(prep.record)
    except DatasetError as e:  # DALI refused the file
        raise PredictError(f"{path}: {e}".splitlines()[0]) from None
    except ValueError as e:  # the loader refused the settings (e.g. crop larger than the short side)
        raise cfg_mod.ConfigError(str(e)) from None
    finally:
        if prep.converted:
            prep.record.path.unlink(missing_ok=True)
    k = min(topk, len(pred.classes))
    top = probs.topk(k)
    return {
        "file": str(path),
        "top": [{"class": pred.classes[i], "label": i, "probability": p}
                for p, i in zip(top.values.tolist(), top.indices.tolist())],
        "converted": prep.converted is not None, "conversion": prep.converted, "notes": prep.notes,
        "num_frames": n, "fps": prep.record.fps, "clips": pred.clips, "crops": pred.crops, "frames": frames,
        "stride": stride, "network": pred.network, "checkpoint": pred.checkpoint,
    }


def format_text(res: dict[str, Any]) -> str:
    """The human-readable block of one file's result."""
    how = res["conversion"] or "read as it is"
    lines = [f"{res['file']}: {res['num_frames']} frames, {res['clips']} clips x {res['crops']} crops ({how})"]
    lines += [f"  note: {n}" for n in res["notes"]]
    width = max(len(t["class"]) for t in res["top"])
    lines += [f"  {t['class']:<{width}}  {t['probability']:.4f}" for t in res["top"]]
    return "\n".join(lines)


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(video paths, option tokens): a bare token is a video unless it is the value of a named option."""
    videos, rest = [], []
    i = 0
    while i < len(argv):
        tok = argv[i]
        name, eq, _ = tok[2:].partition("=")
        if tok.startswith("--") and name in VALUE_OPTIONS and not eq and i + 1 < len(argv):
            rest += [tok, argv[i + 1]]
            i += 2
            continue
        (rest if tok.startswith("--") else videos).append(tok)
        i += 1
    return videos, rest


def _positive_int(opts: dict[str, Any], name: str) -> int | None:
    if opts.get(name) is None:
        return None
    try:
        value = int(opts[name])
    except ValueError:
        value = 0
    if value < 1:
        raise cfg_mod.ConfigError(f"--{name} must be a positive integer, got {opts[name]!r}")
    return value


def _fps(text: str | None) -> Fraction | None:
    if text is None:
        return None
    try:
        value = Fraction(text).limit_denominator(100000)
    except (ValueError, ZeroDivisionError):
        value = Fraction(0)
    if value <= 0:
        raise cfg_mod.ConfigError(f"--fps must be a positive frame rate (30, 29.97, 30000/1001), got {text!r}")
    return value


def run(argv: Sequence[str]) -> int:
    """CLI body: prints results, returns the exit code; raises ConfigError / CheckpointError on user errors."""
    videos, rest = split_argv(argv)
    opts, overrides = cli.parse_argv(rest, options=VALUE_OPTIONS, flags=FLAGS)
    if not opts.get("checkpoint"):
        raise cfg_mod.ConfigError("--checkpoint PATH is required")
    if not videos:
        raise cfg_mod.ConfigError("give at least one video file")
    network = opts.get("network") or "primary"
    if network not in registry.ROLES:
        raise cfg_mod.ConfigError(f"--network must be one of {', '.join(registry.ROLES)}, got {network!r}")
    topk = _positive_int(opts, "topk") or 5
    pred, warnings = load_predictor(opts["checkpoint"], network, overrides, clips=_positive_int(opts, "clips"),
                                    crops=_positive_int(opts, "crops"), fps=_fps(opts.get("fps")))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="cmpl-predict-") as tmp:
        for i, video in enumerate(videos):
            try:
                res = predict_file(pred, Path(video), Path(tmp), topk=topk, index=i)
            except PredictError as e:
                failed += 1
                print(f"error: {e}", file=sys.stderr, flush=True)
                if opts.get("json"):
                    print(json.dumps({"file": video, "error": str(e).removeprefix(f"{video}: ")}), flush=True)
                continue
            print(json.dumps(res) if opts.get("json") else format_text(res), flush=True)
    if not failed:
        return 0
    return 2 if len(videos) == 1 else 1


def main(argv: Sequence[str] | None = None) -> None:
    code = 0

    def body(args: list[str]) -> None:
        nonlocal code
        code = run(args)

    cli.run_cli(__doc__, argv, body, errors=(ckpt_io.CheckpointError,))
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    from cmpl import predict as _predict  # one module object, so error classes match
    from preprocess.entry import run_main

    run_main(_predict.main)
