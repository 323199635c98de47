"""What the GPU path guarantees that a CPU machine can check (issue 19): videos the GPU decoder cannot take
are refused before the first batch with one line; an out-of-range frame is an error, not black; the reader
thread changes no batch (and so no weight); labels reach CUDA without a wait; the cuDNN warning."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cmpl import runtime
from pipelines import device as dev_mod
from pipelines import loaders
from pipelines.dataset import DatasetError, VideoRecord
from pipelines.sampling import ClipSpec
from pipelines.testing import make_dataset

REPO = Path(__file__).resolve().parents[1]


def _records(root: Path, size: tuple[int, int], ext: str = ".webm", n: int = 3) -> list[VideoRecord]:
    recs = []
    for i in range(n):
        rel = f"videos/train/a/v{i}{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
        recs.append(VideoRecord((root / rel).resolve(), rel, 0, 48, 25.0, *size))
    return recs


def test_gpu_decoder_minimum_is_checked_before_the_first_batch_with_one_line(tmp_path):
    (tmp_path / "meta.json").write_text('{"codec": "vp9"}')
    small = _records(tmp_path, (80, 64))
    with pytest.raises(DatasetError) as e:
        dev_mod.check_gpu_decodable(small, "cuda")
    msg = str(e.value)
    assert "\n" not in msg and str(small[0].path) in msg and "80x64" in msg
    assert "below the GPU decoder's minimum 128x128 for vp9" in msg and "3 of 3 videos" in msg
    dev_mod.check_gpu_decodable(small, "cpu")  # the CPU backend has no minimum
    dev_mod.check_gpu_decodable(_records(tmp_path, (180, 144)), "cuda")  # preprocess.synthetic's default
    h264 = tmp_path / "h"
    h264.mkdir()
    dev_mod.check_gpu_decodable(_records(h264, (88, 64), ".mp4"), "cuda")  # no meta.json: .mp4 is H.264, 48x16


def test_out_of_range_frame_is_an_error_naming_the_file_not_a_black_frame(tmp_path):
    root = make_dataset(tmp_path / "d", classes=("a",), train_per_class=2, val_per_class=1, num_frames=24)
    # The manifest claims 40 frames, the files have 24: every 8x4 clip reaches past frame 23.
    for name in ("train.csv", "val.csv"):
        rows = list(csv.reader((root / name).open()))
        with (root / name).open("w", newline="") as f:
            csv.writer(f).writerows([rows[0]] + [[*r[:2], "40", *r[3:]] for r in rows[1:]])
    spec = ClipSpec(primary=(8, 4), aux=(8, 4), crop_size=32, short_side=48, ra_ops=0)
    loader = loaders.labeled_loader(str(root), split="1pct_seed0", batch_size=1, spec=spec, device="cpu")
    with pytest.raises(DatasetError) as e:
        next(iter(loader))
    assert "out-of-bounds frame index" in str(e.value) and ".webm" in str(e.value)


def _batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_reader_thread_yields_the_batches_of_the_single_threaded_loader(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d", classes=("a", "b"), train_per_class=3, val_per_class=1, num_frames=40)
    spec = ClipSpec(primary=(4, 2), aux=(8, 1), time_offset=0.2, crop_size=32, short_side=48, ra_ops=1)

    def make():
        return loaders.unlabeled_loader(str(root), split="1pct_seed0", batch_size=2, spec=spec, device="cpu",
                                        seed=5, with_indices=True, num_threads=1)

    threaded = make()
    got = _batches(threaded, 5)  # 2 batches per epoch: crosses epochs
    monkeypatch.setattr(loaders, "READ_AHEAD", 0)
    want = _batches(make(), 5)
    for a, b in zip(got, want):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # A restored position rebuilds the runner; the old reader thread cannot move the new feed.
    monkeypatch.setattr(loaders, "READ_AHEAD", 2)
    state = {**threaded.state_dict(), "epoch": 0, "position": 1}
    threaded.load_state_dict(state)
    again = _batches(threaded, 2)
    assert all(torch.equal(again[i][k], want[i + 1][k]) for i in range(2) for k in want[0])


def test_tiny_cmpl_train_weights_do_not_depend_on_the_reader_thread(tmp_path):
    """`cmpl.train --preset tiny` with a fixed seed: the same weights with the reader thread as without it
    (READ_AHEAD = 0 is the loader as it was before issue 19)."""
    from conftest import write_synthetic

    data = write_synthetic(tmp_path / "data", per_class=4)
    code = ("import sys, pipelines.loaders as l; l.READ_AHEAD = int(sys.argv[1]); from cmpl.train import main; "
            "main(sys.argv[2:])")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(ahead), "--preset", "tiny", "--data.root", str(data),
                               "--run.dir", str(tmp_path / f"run{ahead}"), "--runtime.seed=3",
                               "--schedule.max_steps=4", "--method.name=cmpl"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for ahead in (0, 2)]
    for p in procs:
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, out[-3000:]
    a, b = (torch.load(tmp_path / f"run{k}/checkpoints/last.pt", weights_only=True)["models"] for k in (0, 2))
    for net in ("primary", "aux"):
        assert a[net].keys() == b[net].keys()
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net


def test_labels_and_indices_keep_their_values_and_dtypes():
    cpu = loaders.to_loader_device(np.array([3, 1], np.int64), torch.device("cpu"))
    assert cpu.dtype == torch.int64 and cpu.tolist() == [3, 1]
    if torch.cuda.is_available():  # pinned memory + non_blocking: queued on the stream, no host wait
        gpu = loaders.to_loader_device(np.array([3, 1], np.int64), torch.device("cuda"))
        assert gpu.is_cuda and gpu.tolist() == [3, 1]


def test_dali_reason_keeps_the_line_that_says_why():
    err = RuntimeError("Critical error in pipeline:\nError in MIXED operator `nvidia.dali.fn.decoders.video`,\n"
                       "which was used in the pipeline definition with the following traceback:\n"
                       '  File "x.py", line 1\nencountered:\n\nVideo is too small in at least one dimension\n'
                       "C++ context: [a.cc:1]\nCurrent pipeline object is no longer valid.")
    assert loaders.dali_reason(err) == "Video is too small in at least one dimension"
    assert loaders.dali_reason(RuntimeError("Critical error in pipeline:\nsomething odd")) == "something odd"


def test_cudnn_warning_only_for_the_bf16_conv3d_slow_path_versions():
    assert "9.8.0" in runtime.cudnn_warning(90800) and "9.15" in runtime.cudnn_warning(90800)
    assert runtime.cudnn_warning(91402) is not None
    assert runtime.cudnn_warning(91500) is None and runtime.cudnn_warning(92400) is None
    assert runtime.cudnn_warning(8902) is None and runtime.cudnn_warning(None) is None
    assert "\n" not in runtime.cudnn_warning(91000)
    before = torch.backends.cudnn.benchmark
    runtime.setup_cuda(torch.device("cpu"))  # a no-op off CUDA
    assert torch.backends.cudnn.benchmark == before
