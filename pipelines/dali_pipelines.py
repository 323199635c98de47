"""DALI graphs: decode the union of a sample's frames once, split it into clips, augment each clip.

All per-sample randomness arrives through `fn.external_source` (drawn in `sampling.py`), so the graphs are
deterministic. Device "gpu": NVDEC ('mixed') decode and every op on the GPU; "cpu": the same graph on the
CPU backend (VP8/VP9/MJPEG only). Outputs are float32 `(C, T, H, W)` per sample, ImageNet-normalized.
The decoder is not fed the whole file: `encoded_input` cuts it down to the GOPs the sample's frames need
(pipelines/webm.py), because DALI's decoder, fed bytes, has no keyframe index and decodes every packet from
the first one it is given up to the last wanted frame.
"""
from __future__ import annotations

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.auto_aug.core import select, signed_bin

from pipelines import rand_augment, sampling, webm

MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]
RA_FILL = 128  # DALI's default border for RandAugment's warps
CUTOUT_FILL = [124, 116, 104]  # the ImageNet mean: zero after normalization, as in the Cutout paper

# Names of the external_source outputs, in order, per pipeline. `source` is a callable returning one list
# of per-sample numpy arrays per name, in this order: the `pack_*` functions below build them, next to the
# graphs that read them, so the names live in this file only.
UNLABELED_INPUTS = (
    "encoded", "union", "p_order", "a_order",
    "ps_x", "ps_y", "ps_flip", "ps_ra", "ps_cut_anchor", "ps_cut_shape",
    "as_x", "as_y", "as_flip", "as_ra", "as_cut_anchor", "as_cut_shape",
)
UNLABELED_OUTPUTS = sampling.UNLABELED.outputs
LABELED_INPUTS = (
    "encoded", "union", "p_order", "a_order",
    "p_side", "p_x", "p_y", "p_flip", "a_side", "a_x", "a_y", "a_flip",
)
LABELED_OUTPUTS = sampling.LABELED.outputs
EVAL_INPUTS = ("encoded", "union", "order", "crop_pos")
DECODE_INPUTS = ("encoded", "union")


def _decode(encoded, union, device: str):
    """All needed frames of each video, `(F, H, W, C)` uint8, sorted by frame index. `encoded` and `union`
    come from `encoded_input`: frame positions in the bytes given, not necessarily in the file."""
    # pad_mode "none": an index past the video's end is an error, not DALI's default silent black frame.
    return fn.decoders.video(encoded, frames=union, device="mixed" if device == "gpu" else "cpu", pad_mode="none")


def encoded_input(data: np.ndarray, union: np.ndarray, num_frames: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(bytes for the decoder, frames to ask it for) to get frames `union` (sorted, unique) of a file whose
    bytes are `data` and which has `num_frames` frames (train.csv).

    A WebM (every file preprocess writes, in any dataset folder written before or after this) is cut to the
    packets from the keyframe before each needed GOP's first wanted frame to its last one (webm.cut): the
    decoder then starts at a keyframe and skips no GOP the sample does not need. Any other file, or one
    whose layout webm.cut does not rely on (it checks), is fed whole with `union` unchanged, as before.
    """
    try:
        return webm.cut(data, union, num_frames=num_frames)
    except webm.NotCuttable:
        return data, np.asarray(union, np.int32)


def _to_short_side(frames, short_side: int | None):
    """Resize the short side to `short_side`; None when the files already have it (preprocess writes them at
    the training short side), because an identity resize still resamples every pixel: on the CPU backend it
    cost about as much as decoding (bench/RESULTS.md)."""
    return frames if short_side is None else fn.resize(frames, resize_shorter=short_side)


def _normalize(clip, crop_size: int | None = None, x=0.5, y=0.5, flip=0):
    """Optional crop/flip, ImageNet normalization and `(F, H, W, C)` -> `(C, F, H, W)` float32."""
    crop = {"crop": (crop_size, crop_size), "crop_pos_x": x, "crop_pos_y": y} if crop_size else {}
    return fn.crop_mirror_normalize(
        clip, **crop, mirror=flip, mean=MEAN, std=STD, dtype=types.FLOAT, output_layout="CFHW")


def _strong(clip, crop_size: int, ra_ops: int, ra_translate: float, x, y, flip, ra, cut_anchor, cut_shape):
    """Random crop + flip, RandAugment (`ra_ops` ops and magnitudes given per clip; DALI's suite with per-clip
    contrast and auto-contrast, rand_augment.py) and Cutout, then normalize."""
    clip = fn.crop_mirror_normalize(
        clip, crop=(crop_size, crop_size), crop_pos_x=x, crop_pos_y=y, mirror=flip,
        dtype=types.UINT8, output_layout="FHWC")
    suite = rand_augment.clip_suite(ra_translate)
    assert len(suite) == sampling.RA_SUITE_SIZE, "DALI's RandAugment suite changed; update sampling.py"
    for level in range(ra_ops):
        magnitude = signed_bin(ra[level, 1], random_sign=ra[level, 2])
        clip = select(
            suite, ra[level, 0], data=clip, magnitude_bin=magnitude,
            num_magnitude_bins=sampling.RA_NUM_BINS, shape=(crop_size, crop_size), fill_value=RA_FILL,
            # Nearest-neighbour warps, as FixMatch's RandAugment and torchvision's (the reference loader):
            # same augmentation as the baseline, and about half the CPU cost of bilinear at 224 px.
            interp_type=types.INTERP_NN)
    clip = fn.erase(clip, anchor=cut_anchor, shape=cut_shape, axis_names="HW", fill_value=CUTOUT_FILL)
    return _normalize(clip)


@pipeline_def(enable_conditionals=True)
def unlabeled_pipeline(source, *, device: str, crop_size: int, short_side: int | None, ra_ops: int,
                       ra_translate: float = rand_augment.DALI_TRANSLATE):
    """Outputs (primary_weak, primary_strong, aux_weak, aux_strong); weak and strong share frames.

    `short_side` None: the decoded frames already have the wanted short side (no resize op).

    Building it takes seconds per RandAugment op (AutoGraph traces DALI's conditional `select`).
    """
    i = dict(zip(UNLABELED_INPUTS, fn.external_source(source=source, num_outputs=len(UNLABELED_INPUTS), batch=True)))
    frames = _to_short_side(_decode(i["encoded"], i["union"], device), short_side)
    primary = fn.sequence_rearrange(frames, new_order=i["p_order"])
    aux = fn.sequence_rearrange(frames, new_order=i["a_order"])
    return (
        _normalize(primary, crop_size),
        _strong(primary, crop_size, ra_ops, ra_translate, *(i[f"ps_{k}"] for k in ("x", "y", "flip", "ra", "cut_anchor", "cut_shape"))),
        _normalize(aux, crop_size),
        _strong(aux, crop_size, ra_ops, ra_translate, *(i[f"as_{k}"] for k in ("x", "y", "flip", "ra", "cut_anchor", "cut_shape"))),
    )


@pipeline_def
def labeled_pipeline(source, *, device: str, crop_size: int):
    """Outputs (primary, aux): each clip with its own scale jitter, crop and flip."""
    i = dict(zip(LABELED_INPUTS, fn.external_source(source=source, num_outputs=len(LABELED_INPUTS), batch=True)))
    frames = _decode(i["encoded"], i["union"], device)
    out = []
    for b in ("p", "a"):
        clip = fn.sequence_rearrange(frames, new_order=i[f"{b}_order"])
        clip = fn.resize(clip, resize_shorter=i[f"{b}_side"])
        out.append(_normalize(clip, crop_size, i[f"{b}_x"], i[f"{b}_y"], i[f"{b}_flip"]))
    return tuple(out)


@pipeline_def
def eval_pipeline(source, *, device: str, crop_size: int, short_side: int | None, crops: int):
    """`crops` outputs, each `(C, clips*T, H, W)`: the same frames cropped at `crop_pos[k] = (x, y)`."""
    i = dict(zip(EVAL_INPUTS, fn.external_source(source=source, num_outputs=len(EVAL_INPUTS), batch=True)))
    frames = _to_short_side(_decode(i["encoded"], i["union"], device), short_side)
    clips = fn.sequence_rearrange(frames, new_order=i["order"])
    return tuple(_normalize(clips, crop_size, i["crop_pos"][k, 0], i["crop_pos"][k, 1]) for k in range(crops))


@pipeline_def
def decode_pipeline(source, *, device: str):
    """The decode floor for bench/: only the decoder, on the same frames, no augmentation."""
    i = dict(zip(DECODE_INPUTS, fn.external_source(source=source, num_outputs=len(DECODE_INPUTS), batch=True)))
    return _decode(i["encoded"], i["union"], device)


def _scalar(v, dtype) -> np.ndarray:
    return np.array(v, dtype=dtype)


def pack_train(batch: list[sampling.TrainSample], kind: sampling.Kind) -> tuple[list, ...]:
    """Per-sample arrays for the external_source of `kind`'s pipeline (train_pipeline), in input order."""
    labeled = kind is sampling.LABELED
    names = LABELED_INPUTS if labeled else UNLABELED_INPUTS
    cols: dict[str, list] = {n: [] for n in names}
    for s in batch:
        union, (p_order, a_order) = sampling.union_positions(s.primary_indices, s.aux_indices)
        encoded, frames = encoded_input(np.fromfile(s.record.path, np.uint8), union, s.record.num_frames)
        cols["encoded"].append(encoded)
        cols["union"].append(frames)
        cols["p_order"].append(p_order)
        cols["a_order"].append(a_order)
        if labeled:
            for b, view in (("p", s.views["primary"]), ("a", s.views["aux"])):
                cols[f"{b}_side"].append(_scalar(view.short_side, np.float32))
                cols[f"{b}_x"].append(_scalar(view.x, np.float32))
                cols[f"{b}_y"].append(_scalar(view.y, np.float32))
                cols[f"{b}_flip"].append(_scalar(view.flip, np.int32))
        else:
            for b, view in (("ps", s.views["primary_strong"]), ("as", s.views["aux_strong"])):
                cols[f"{b}_x"].append(_scalar(view.x, np.float32))
                cols[f"{b}_y"].append(_scalar(view.y, np.float32))
                cols[f"{b}_flip"].append(_scalar(view.flip, np.int32))
                cols[f"{b}_ra"].append(view.ra)
                cy, cx, h, w = view.cutout
                cols[f"{b}_cut_anchor"].append(np.array([cy, cx], np.float32))
                cols[f"{b}_cut_shape"].append(np.array([h, w], np.float32))
    return tuple(cols[n] for n in names)


def pack_eval(batch) -> tuple[list, ...]:
    """Per-sample arrays for eval_pipeline's external_source (batch: loaders.EvalSample list)."""
    cols: dict[str, list] = {n: [] for n in EVAL_INPUTS}
    for s in batch:
        union, (order,) = sampling.union_positions(s.indices.reshape(-1))
        encoded, frames = encoded_input(np.fromfile(s.record.path, np.uint8), union, s.record.num_frames)
        cols["encoded"].append(encoded)
        cols["union"].append(frames)
        cols["order"].append(order)
        cols["crop_pos"].append(s.crop_pos)
    return tuple(cols[n] for n in EVAL_INPUTS)


def train_pipeline(source, *, kind: sampling.Kind, device: str, crop_size: int, short_side: int | None,
                   ra_ops: int, ra_translate: float = rand_augment.DALI_TRANSLATE, **pipe_args):
    """The pipeline of a training `kind` (labeled: scale jitter per clip; unlabeled: weak/strong views)."""
    if kind is sampling.LABELED:
        return labeled_pipeline(source, device=device, crop_size=crop_size, **pipe_args)
    return unlabeled_pipeline(source, device=device, crop_size=crop_size, short_side=short_side, ra_ops=ra_ops,
                              ra_translate=ra_translate, **pipe_args)
