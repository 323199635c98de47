"""Tiny fake UCF-101 / Kinetics-400 downloads, messy on purpose, for tests and trials (nothing downloaded).

    from preprocess.testing import make_ucf_layout, make_k400_layout
    root, lists = make_ucf_layout(tmp / "ucf")     # root/UCF-101/<Class>/v_*.avi + root/ucfTrainTestlist
    src, ann = make_k400_layout(tmp / "k400")      # clips in per-label and flat folders + train/val.csv

Inputs are 64x48 and about 1 s: MPEG-4 Part 2 AVI, NTSC 30000/1001, an audio track, variable frame rate,
H.264 with B-frames, a portrait odd-sized video, plus a missing, a truncated, a zero-length and a garbage
file. `TEST_SHORT_SIDE` is the short side to encode them at (the default 256 would upscale them).
"""
from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

from preprocess.encode import ffmpeg_exe

TEST_SHORT_SIDE = "48"
UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]

K400_TRAIN_CSV = """label,youtube_id,time_start,time_end,split,is_cc
"playing guitar",aaaaaaaaaaa,10,20,train,0
"playing guitar",bbbbbbbbbbb,0,10,train,0
riding a bike,ccccccccccc,5,15,train,0
riding a bike,ddddddddddd,30,40,train,0
riding a bike,missingmiss,0,10,train,0
"""
K400_VAL_CSV = """label,youtube_id,time_start,time_end,split,is_cc
playing guitar,eeeeeeeeeee,1,11,val,0
riding a bike,fffffffffff,2,12,val,0
juggling,ggggggggggg,0,10,val,0
"""


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def make_video(path: Path, *, size: str = "64x48", rate: str = "25", seconds: float = 1.0,
               extra: tuple[str, ...] = ("-c:v", "mpeg4", "-q:v", "5"), audio: bool = False,
               vf: str | None = None) -> Path:
    """Write ffmpeg's testsrc2 pattern to `path` (codec args in `extra`, an optional sine audio track)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440"]
    args += ["-t", str(seconds)]
    if vf:
        args += ["-vf", vf]
    ffmpeg(*args, *extra, *(["-c:a", "pcm_s16le" if path.suffix == ".avi" else "aac"] if audio else []),
           str(path))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def make_ucf_layout(root: Path) -> tuple[Path, Path]:
    """An official-looking UCF-101 download under `root`: returns (root, lists folder); videos are under
    root/UCF-101/. Train: 8 listed (1 missing, 1 truncated, 1 zero-length); test: 3. CRLF list files."""
    src, lists = root / "UCF-101", root / "ucfTrainTestlist"
    a, b, c = (src / n for n in UCF_CLASSES)
    make_video(a / "v_ApplyEyeMakeup_g01_c01.avi")
    make_video(a / "v_ApplyEyeMakeup_g02_c01.avi", rate="30000/1001")  # NTSC
    make_video(a / "v_ApplyEyeMakeup_g03_c01.avi", audio=True)
    make_video(a / "v_ApplyEyeMakeup_g04_c01.avi")  # test
    # portrait, odd size (yuv444p: MPEG-4 Part 2 and 4:2:0 cannot hold odd sizes)
    make_video(b / "v_Basketball_g01_c01.avi", size="45x63", extra=("-c:v", "libx264", "-pix_fmt", "yuv444p"))
    full = make_video(root / "full.avi", seconds=2.0).read_bytes()
    (b / "v_Basketball_g02_c01.avi").write_bytes(full[: len(full) // 2])  # truncated
    (b / "v_Basketball_g03_c01.avi").write_bytes(b"")  # zero-length
    make_video(b / "v_Basketball_g04_c01.avi")  # test
    make_video(c / "v_YoYo_g02_c01.avi")
    make_video(c / "v_YoYo_g03_c01.avi")  # test
    lists.mkdir()
    crlf = lambda lines: "".join(line + "\r\n" for line in lines).encode()  # noqa: E731
    (lists / "classInd.txt").write_bytes(crlf(f"{i + 1} {n}" for i, n in enumerate(UCF_CLASSES)))
    train = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1", "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 1",
             "ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi 1", "Basketball/v_Basketball_g01_c01.avi 2",
             "Basketball/v_Basketball_g02_c01.avi 2", "Basketball/v_Basketball_g03_c01.avi 2",
             "YoYo/v_YoYo_g01_c01.avi 3",  # listed, missing
             "YoYo/v_YoYo_g02_c01.avi 3"]
    test = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g04_c01.avi", "Basketball/v_Basketball_g04_c01.avi",
            "YoYo/v_YoYo_g03_c01.avi"]
    (lists / "trainlist01.txt").write_bytes(crlf(train))
    (lists / "testlist01.txt").write_bytes(crlf(test))
    return root, lists


def make_k400_layout(root: Path) -> tuple[Path, Path]:
    """A Kinetics-400 download under `root`: returns (clips folder, annotations folder). Clips sit in
    per-label folders with spaces and in a flat folder; one is garbage, one is listed but absent, one val
    clip's label is not a class of train.csv."""
    src, ann = root / "kinetics", root / "annotations"
    h264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")
    # per-label folders with spaces (downloader layout) ...
    make_video(src / "train/playing guitar/aaaaaaaaaaa_000010_000020.mp4", extra=h264,
               vf="setpts='(N+N*N/50)/25/TB'")  # variable frame rate
    make_video(src / "train/playing guitar/bbbbbbbbbbb_000000_000010.mp4", extra=(*h264, "-bf", "3"))
    make_video(src / "train/riding a bike/ccccccccccc_000005_000015.mp4", extra=h264, audio=True)
    (src / "train/riding a bike/ddddddddddd_000030_000040.mp4").write_bytes(os.urandom(4000))  # garbage
    # ... and flat
    make_video(src / "eeeeeeeeeee_000001_000011.mkv", extra=h264, rate="30000/1001")
    make_video(src / "fffffffffff_000002_000012.webm", extra=("-c:v", "libvpx-vp9", "-deadline", "realtime"))
    make_video(src / "ggggggggggg_000000_000010.mp4", extra=h264)
    ann.mkdir()
    (ann / "train.csv").write_text(K400_TRAIN_CSV)
    (ann / "val.csv").write_text(K400_VAL_CSV)
    return src, ann
