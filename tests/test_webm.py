"""pipelines/webm.py: the decoder gets only the GOPs a sample needs, and still returns exactly its frames."""
from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

import pipelines
from pipelines import dali_pipelines as dp
from pipelines import sampling, webm
from pipelines.dataset import read_subset
from pipelines.testing import MAX_FRAMES, MEAN, STD, indexed_frame, make_dataset, read_indices, write_indexed_video
from preprocess.encode import EncodeSettings, encode_frames

N = 120  # frames: as far as the index colours reach (MAX_FRAMES = 125)
UNIONS = {
    "first frame": [0],
    "last frame": [N - 1],
    "a clip at the end": list(range(N - 29, N, 4)),
    "F and A apart": [2, 10, 18, 26] + list(range(80, 112, 2)),
    "one per GOP": list(range(3, N, 8)),
    "keyframes only": [0, 16, 32],
    "everything": list(range(N)),
}


def _decode(data: np.ndarray, frames) -> np.ndarray:
    """DALI's CPU decoder on these bytes: (F, H, W, 3) uint8."""
    def source():
        return [data], [np.asarray(frames, np.int32)]

    pipe = dp.decode_pipeline(source, device="cpu", batch_size=1, num_threads=1, device_id=None,
                              exec_dynamic=True, prefetch_queue_depth=1)
    pipe.build()
    return np.array(pipe.run()[0].as_tensor())[0]


def _indices(frames: np.ndarray) -> list[int]:
    """Frame indices shown by decoded `(T, H, W, 3)` uint8 frames."""
    clip = (torch.from_numpy(frames).float() - MEAN) / STD
    return read_indices(clip.permute(3, 0, 1, 2))


@pytest.fixture(scope="module", params=["pyav", "preprocess"])
def video(request, tmp_path_factory):
    """A 120-frame indexed VP9 WebM, written by PyAV (the test fixtures, GOP 8) or by preprocess's ffmpeg
    command (GOP 16: Cues, SeekHead and clusters as in every dataset folder)."""
    path = tmp_path_factory.mktemp("v") / "v.webm"
    if request.param == "pyav":
        write_indexed_video(path, N, (48, 64), gop=8)
    else:
        frames = np.stack([indexed_frame(i, 48, 64) for i in range(N)])
        encode_frames(frames, path, EncodeSettings(short_side=48, gop=16, fps=Fraction(25)))
    return path


@pytest.mark.parametrize("name", list(UNIONS))
def test_cut_decodes_the_same_frames_bit_for_bit(video, name):
    data = np.fromfile(video, np.uint8)
    union = np.array(UNIONS[name])
    cut, pos = dp.encoded_input(data, union, N)
    assert N <= MAX_FRAMES and len(pos) == len(union)
    if name != "everything":
        assert len(cut) < len(data)
    whole = _decode(data, union)
    got = _decode(cut, pos)
    np.testing.assert_array_equal(got, whole)
    assert _indices(got) == union.tolist()  # and they are the wanted frames


def test_cut_keeps_only_the_needed_gops(video):
    data = np.fromfile(video, np.uint8)
    lay = webm.layout(data)
    gop = int(np.flatnonzero(lay.key)[1])
    assert len(lay) == N and gop in (8, 16)
    cut, pos = webm.cut(data, np.array([N - 1]), lay)
    kept = webm.layout(cut)
    # From the last keyframe to the last frame; time starts at 0 and keeps the file's frame duration.
    first = (N - 1) // gop * gop
    assert len(kept) == N - first and pos.tolist() == [N - 1 - first]
    np.testing.assert_array_equal(kept.pts, lay.pts[first:] - lay.pts[first])
    assert kept.key[0] and kept.key.sum() == 1
    # Two clips in different GOPs with a gap between them: the gap's packets are left out.
    union = np.array([1, 2, N - 2])
    cut, pos = webm.cut(data, union, lay)
    kept = webm.layout(cut)
    assert len(kept) == 3 + (N - 2 - first + 1) and pos.tolist() == [1, 2, len(kept) - 1]
    assert np.all(np.diff(kept.pts) > 0)
    # PyAV (another demuxer) reads the cut file as a normal WebM with as many frames
    with av.open(io.BytesIO(cut.tobytes())) as c:
        assert sum(1 for _ in c.decode(video=0)) == len(kept)


def test_what_cannot_be_cut_is_fed_whole(video, tmp_path):
    data = np.fromfile(video, np.uint8)
    union = np.array([5, 40])
    for bad in (np.frombuffer(b"not a video at all" * 20, np.uint8),  # not Matroska
                data[: len(data) // 2]):  # truncated
        out, frames = dp.encoded_input(bad, union, N)
        assert out is bad and frames.tolist() == [5, 40]
    # a manifest frame count that is not the packet count: the cut's frame = packet mapping is not trusted
    out, frames = dp.encoded_input(data, union, N + 1)
    assert out is data and frames.tolist() == [5, 40]
    with pytest.raises(webm.NotCuttable, match="tracks"):  # two tracks (video + audio)
        path = tmp_path / "av.mkv"
        with av.open(str(path), "w") as c:
            v = c.add_stream("libvpx-vp9", rate=25)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
            a = c.add_stream("pcm_s16le", rate=48000)
            for i in range(3):
                c.mux(v.encode(av.VideoFrame.from_ndarray(indexed_frame(i, 48, 64), format="rgb24")))
            c.mux(v.encode())
            c.mux(a.encode())
        webm.layout(np.fromfile(path, np.uint8))


def test_far_clips_through_the_loaders(tmp_path):
    """The loaders' own path: F and A clips far into 120-frame videos, t_s up to 3 s, frames exact."""
    root = make_dataset(tmp_path / "ds", num_frames=[N, 100], train_per_class=2, classes=("a", "b"))
    spec = sampling.ClipSpec(primary=(4, 8), aux=(8, 2), time_offset=3.0, crop_size=32, short_side=40, ra_ops=0)
    loader = pipelines.unlabeled_loader(root, split="1pct_seed0", batch_size=2, device="cpu", spec=spec,
                                        with_indices=True, seed=3)
    far = 0
    for _ in range(6):
        b = next(loader)
        for i in range(2):
            for clip in ("primary", "aux"):
                idx = b[f"{clip}_indices"][i].tolist()
                assert read_indices(b[f"{clip}_weak"][i]) == idx
                assert read_indices(b[f"{clip}_strong"][i]) == idx
                far += idx[0] >= 40
    assert far > 0  # some clips started well past the first GOPs
    # eval: clips spread over the whole video
    ev = pipelines.eval_loader(root, subset="train", batch_size=2, device="cpu", clips=4, crops=1, crop_size=32,
                               short_side=48, frames=4, stride=8, with_indices=True)
    for b in ev:
        for i in range(len(b["label"])):
            for v in range(4):
                assert read_indices(b["video"][i, v]) == b["indices"][i, v].tolist()


def test_every_record_of_a_dataset_folder_is_cuttable(tmp_path):
    """Dataset folders written before this change need nothing new: their files cut as they are."""
    root = make_dataset(tmp_path / "ds", num_frames=[48, 10, 33])
    for r in read_subset(root, "train"):
        lay = webm.layout(np.fromfile(r.path, np.uint8))
        assert len(lay) == r.num_frames and lay.key[0]
