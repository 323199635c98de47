"""cmpl.predict on files made here: evaluate's clips/crops and averaging, conversion, notes, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cmpl import checkpoint, config, models, predict, presets
from pipelines.testing import make_dataset, write_indexed_video
from preprocess.encode import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    # 25 fps VP9 (meta.json says 25): the dataset format, which predict reads without converting.
    return make_dataset(tmp_path_factory.mktemp("data") / "d", classes=CLASSES, train_per_class=1,
                        val_per_class=1, num_frames=[40, 30, 48], fps=25)


def save_tiny(path: Path, root: str, **extra) -> Path:
    """A tiny F-only checkpoint as the trainer exports it (random weights, seed 0)."""
    cfg = presets.get("tiny")
    cfg.data.root, cfg.model.num_classes = root, len(CLASSES)
    torch.manual_seed(0)
    net = models.build(cfg.model.primary, num_classes=len(CLASSES), layout=cfg.model.layout,
                       dropout=cfg.model.dropout)
    checkpoint.save_atomic({"model": net.state_dict(), "network": "primary", "config": config.to_dict(cfg),
                            "step": 3, **extra}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(dataset, tmp_path_factory) -> Path:
    # No "fps" key: the training rate comes from DATA_ROOT/meta.json.
    return save_tiny(tmp_path_factory.mktemp("run") / "primary.pt", str(dataset), classes=list(CLASSES))


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    try:
        predict.main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def mean_softmax(net: torch.nn.Module, video: torch.Tensor) -> torch.Tensor:
    """(1, V, C, T, H, W) -> (K,): the protocol written out here, independently of cmpl.evaluate."""
    with torch.no_grad():
        return net.eval()(video[0]).softmax(dim=-1).mean(dim=0)


def test_dataset_videos_read_as_is_score_like_evaluate(dataset, ckpt, capsys):
    import pipelines
    from cmpl.evaluate import load_network

    net, cfg, _ = load_network(ckpt)
    d = cfg.data
    loader = pipelines.eval_loader(dataset, subset="val", batch_size=1, device="cpu", clips=3, crops=2,
                                   crop_size=d.eval_crop_size, short_side=d.eval_short_side,
                                   frames=d.primary[0], stride=d.primary[1])
    want = [mean_softmax(net, b["video"]) for b in loader]
    videos = [str(dataset / f"videos/val/{c}/{c}_000.webm") for c in CLASSES]
    code, out, err = run_main(capsys, *videos, "--checkpoint", str(ckpt), "--clips", "3", "--crops", "2",
                              "--topk", "3", "--json")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in results] == videos
    for r, w in zip(results, want):
        assert not r["converted"] and r["notes"] == [] and (r["clips"], r["crops"]) == (3, 2)
        assert (r["frames"], r["stride"], r["fps"]) == (4, 2, 25.0)
        got = torch.zeros(len(CLASSES))
        for t in r["top"]:
            assert t["class"] == CLASSES[t["label"]]
            got[t["label"]] = t["probability"]
        torch.testing.assert_close(got, w, atol=1e-5, rtol=0)
        assert [t["probability"] for t in r["top"]] == sorted(got.tolist(), reverse=True)


def test_h264_is_converted_and_a_short_video_padded(ckpt, tmp_path, capsys):
    h264 = write_indexed_video(tmp_path / "phone.mp4", 60, size=(64, 48), fps=30, codec="libx264")
    short = write_indexed_video(tmp_path / "short.webm", 5, fps=25)  # tiny F's clip spans 7 frames
    code, out, err = run_main(capsys, str(h264), str(short), "--checkpoint", str(ckpt), "--topk", "2")
    assert code == 0, err
    blocks = out.strip().split("\n" + str(short))
    assert blocks[0].startswith(f"{h264}: 50 frames")  # 60 frames at 30 fps = 2 s = 50 frames at 25 fps
    assert "converted from h264 at 30.000 fps to VP9 at 25.000 fps, short side 32" in blocks[0]
    assert "note: shorter than one clip (5 frames < 7): padded with its last frame" in blocks[1]
    assert "read as it is" in blocks[1]
    names = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "note:" not in line]
    assert len(names) == 4 and set(names) <= set(CLASSES)


def zero_frame_mp4(path: Path) -> Path:
    """An MP4 whose header declares a video stream but whose media data is cut off: no frame decodes."""
    full = path.with_name("full.mp4")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25",
                    "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(full)],
                   check=True)
    data = full.read_bytes()
    path.write_bytes(data[: data.index(b"mdat") + 8])
    return path


def test_several_files_report_each_failure_and_predict_the_rest(dataset, ckpt, tmp_path, capsys):
    good = str(dataset / "videos/val/beta/beta_000.webm")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    bad = {str(tmp_path / "missing.mp4"): "no such file", str(text): "unreadable",
           str(empty): "empty file", str(zero_frame_mp4(tmp_path / "zero.mp4")): "no frames decoded"}
    code, out, err = run_main(capsys, *bad, good, "--checkpoint", str(ckpt), "--json")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == len(bad)
    for line, (path, why) in zip(lines, bad.items()):
        assert line.startswith(f"error: {path}: ") and why in line, line
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in results] == [*bad, good]
    assert all("error" in r for r in results[:-1]) and results[-1]["top"][0]["class"] in CLASSES


def test_without_class_names_prints_label_numbers_and_warns(tmp_path, capsys):
    # Neither "classes" in the checkpoint nor a readable DATA_ROOT: label numbers, one warning line.
    ck = save_tiny(tmp_path / "p.pt", str(tmp_path / "gone"), fps="25")
    video = write_indexed_video(tmp_path / "v.webm", 20, fps=25)
    code, out, err = run_main(capsys, str(video), "--checkpoint", str(ck), "--topk", "3", "--json")
    assert code == 0, err
    assert err.count("warning:") == 1 and "no class names" in err
    res = json.loads(out)
    assert sorted(t["class"] for t in res["top"]) == ["0", "1", "2"] and not res["converted"]


@pytest.mark.parametrize("args, words", [
    (("/no/such.mp4", "--checkpoint", "{ckpt}"), ["/no/such.mp4", "no such file"]),
    (("{video}", "--checkpoint", "/no/ckpt.pt"), ["checkpoint not found", "/no/ckpt.pt"]),
    (("{video}", "--checkpoint", "{ckpt}", "--network", "aux"), ["primary"]),
    (("{video}", "--checkpoint", "{ckpt}", "--topk", "0"), ["--topk"]),
    (("--checkpoint", "{ckpt}"), ["video"]),
])
def test_user_errors_are_one_line_exit_2(dataset, ckpt, capsys, args, words):
    video = dataset / "videos/val/alpha/alpha_000.webm"
    code, out, err = run_main(capsys, *(a.format(ckpt=ckpt, video=video) for a in args))
    assert code == 2 and not out, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert all(w in lines[0] for w in words), lines[0]


def test_cli_one_bad_file_no_traceback(ckpt, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    r = subprocess.run([sys.executable, "-m", "cmpl.predict", str(bad), "--checkpoint", str(ckpt)], cwd=REPO,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=180)
    assert r.returncode == 2 and not r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: unreadable"), r.stderr
