"""Re-encoding throughput of preprocess/ on this machine.

    python -m bench.preprocess [--videos 16 --workers W --seconds 4 --size 320x240 --codec vp9]
    python -m bench.preprocess --src DIR [--videos N]     # your own videos (e.g. a UCF-101 class folder)

Without --src it first writes UCF-101-like inputs (MPEG-4 Part 2 AVI, 25 fps, with temporal noise so the
encoder has real work), then converts them exactly as `preprocess.ucf101` does (probe, ffmpeg, full decode
to verify and count frames) and prints videos/s and output frames/s. It also times the verifying decode
alone, single process, to show its share of the cost.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from preprocess.dataset_writer import Job, run_jobs
from preprocess.encode import EncodeSettings, ffmpeg_exe, probe_output

VIDEO_EXTS = {".avi", ".mp4", ".mkv", ".webm", ".mov"}


def make_inputs(folder: Path, n: int, *, seconds: float, size: str) -> list[Path]:
    """UCF-101-like test inputs: MPEG-4 Part 2 in AVI with moving content and sensor-like noise."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"v_Bench_g{i:02d}_c01.avi"
        source = f"testsrc2=size={size}:rate=25,format=yuv420p,noise=alls=12:allf=t+u:all_seed={i}"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds),
                        "-c:v", "mpeg4", "-q:v", "4", str(path)], check=True)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.preprocess", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seconds", type=float, default=4.0, help="length of generated inputs")
    p.add_argument("--size", default="320x240", help="size of generated inputs (UCF-101: 320x240)")
    p.add_argument("--src", type=Path, help="benchmark these videos instead of generated ones")
    p.add_argument("--codec", choices=("vp9", "h264"), default="vp9")
    p.add_argument("--fps", type=Fraction, default=Fraction(25))
    p.add_argument("--short-side", type=int, default=256)
    args = p.parse_args(argv)
    settings = EncodeSettings(codec=args.codec, fps=args.fps, short_side=args.short_side)

    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        tmp = Path(tmp)
        if args.src:
            if not args.src.is_dir():
                print(f"error: --src is not a folder: {args.src}", file=sys.stderr)
                return 2
            inputs = sorted(q for q in args.src.rglob("*") if q.suffix.lower() in VIDEO_EXTS)[: args.videos]
            if not inputs:
                print(f"error: no videos under {args.src}", file=sys.stderr)
                return 2
        else:
            t0 = time.perf_counter()
            inputs = make_inputs(tmp / "src", args.videos, seconds=args.seconds, size=args.size)
            print(f"wrote {len(inputs)} inputs ({args.size}, {args.seconds:g} s, MPEG-4 AVI) "
                  f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        jobs = [Job(source=q.name, rel=f"videos/{i:05d}{settings.ext}", label=0, subset="train", src_path=q)
                for i, q in enumerate(inputs)]
        out = tmp / "out"
        out.mkdir()
        t0 = time.perf_counter()
        outcomes = run_jobs(out, jobs, settings, workers=args.workers, desc="bench")
        elapsed = time.perf_counter() - t0
        done = [o for o in outcomes if o.status == "converted"]
        frames = sum(o.info.num_frames for o in done)
        mbytes = sum((out / o.job.rel).stat().st_size for o in done) / 1e6
        t0 = time.perf_counter()
        for o in done:
            probe_output(out / o.job.rel)
        verify = time.perf_counter() - t0

    print(f"codec {settings.codec} crf {settings.quality}, short side {settings.short_side}, "
          f"{settings.fps} fps, gop {settings.gop}, workers {args.workers}, cpus {os.cpu_count()}")
    print(f"converted {len(done)}/{len(jobs)} videos, {frames} frames, in {elapsed:.2f} s: "
          f"{len(done) / elapsed:.2f} videos/s, {frames / elapsed:.0f} output frames/s")
    if done:
        seconds_of_video = frames / float(settings.fps)
        print(f"output {mbytes:.2f} MB ({8 * mbytes / seconds_of_video * 1000:.0f} kbit/s); "
              f"verifying decode alone (1 process): {frames / verify:.0f} frames/s")
    return 0 if len(done) == len(jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
