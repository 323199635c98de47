"""Re-encoding throughput of preprocess/, and its overhead over the bare ffmpeg command it wraps.

    python -m bench.preprocess [--videos 16 --workers W --seconds 4 --size 320x240 --codec vp9 --reps 3]
    python -m bench.preprocess --src DIR [--videos N]     # your own videos (e.g. a UCF-101 class folder)

Without --src it first writes UCF-101-like inputs (MPEG-4 Part 2 AVI, 25 fps, with temporal noise so the
encoder has real work). Then, interleaved over --reps repetitions (order alternating), it converts them
(1) exactly as `preprocess.ucf101` does (`run_jobs`: worker processes, probe, ffmpeg, verification and frame
    count of each output by its packets (`encode.count_frames`), resume state), and
(2) with the bare ffmpeg command alone, the very argument list `preprocess.encode.encode_file` runs for each
    input (captured from it, not rebuilt here), the same number of processes at a time,
and prints median wall and CPU time of each, the ratio (1)/(2) (goal: <= 1.2, issue 21), videos/s and
videos/s/core (videos/s over the cores in use, min(workers, cpus)). The outputs of (1) and (2) are compared
byte for byte (the encoder runs with bit-exact flags), which shows that both ran the same command. It also
times the verification alone, single process, to show its share of the cost, and the full decode of every
output that verified it before issue 21 (`encode.probe_output`), with whether both counted the same frames.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from unittest import mock

import numpy as np

from cmpl.atomic import write_json
from preprocess import encode
from preprocess.dataset_writer import Job, run_jobs
from preprocess.encode import EncodeSettings, count_frames, ffmpeg_exe, probe_output, probe_source

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


class _Captured(Exception):
    def __init__(self, cmd: list[str]):
        super().__init__("ffmpeg command captured")
        self.cmd = cmd


def ffmpeg_command(src: Path, dst: Path, settings: EncodeSettings) -> list[str]:
    """The argument list `encode.encode_file(src, dst, settings)` runs, with `dst` as the output.

    Taken from encode_file itself (its subprocess call is intercepted before ffmpeg starts; it probes the
    source first, as it always does), so the bare run cannot drift from what preprocess runs. encode.py has
    no public function that returns the command.
    """
    def capture(cmd, *args, **kwargs):
        raise _Captured(list(cmd))

    with mock.patch.object(encode.subprocess, "run", capture):
        try:
            encode.encode_file(src, dst, settings)
        except _Captured as c:
            cmd = c.cmd
        else:
            raise RuntimeError("encode_file ran no subprocess; bench.preprocess needs updating")
    tmp = str(encode.temp_path(dst))
    if cmd[-1] != tmp:
        raise RuntimeError(f"encode_file's last argument is {cmd[-1]!r}, expected its temp output {tmp!r}")
    return [*cmd[:-1], str(dst)]


def _cpu_s() -> float:
    """CPU seconds of this process and of its children (and their children) that have been waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(run) -> dict:
    c0, t0 = _cpu_s(), time.perf_counter()
    run()
    return {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0}


def run_preprocess(jobs: list[Job], out: Path, settings: EncodeSettings, workers: int) -> list:
    """(1): convert `jobs` into the fresh folder `out` as the dataset commands do."""
    out.mkdir(parents=True)
    outcomes = run_jobs(out, jobs, settings, workers=workers, desc="preprocess")
    bad = [o for o in outcomes if o.status != "converted"]
    if bad:
        raise RuntimeError(f"preprocess did not convert {bad[0].job.source}: {bad[0].reason or bad[0].status}")
    return outcomes


def run_bare(commands: list[list[str]], workers: int) -> None:
    """(2): the captured ffmpeg commands, `workers` at a time, nothing else."""
    def one(cmd: list[str]) -> None:
        Path(cmd[-1]).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       check=True)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, commands))


def _import_writer(_: int) -> None:
    import preprocess.dataset_writer  # noqa: F401 -- what a spawned run_jobs worker imports before its first job


def worker_startup_s(workers: int) -> float:
    """Wall seconds to start `workers` spawned processes that import the writer, as run_jobs's pool does."""
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_import_writer, range(workers)))
    return time.perf_counter() - t0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs(args: argparse.Namespace, tmp: Path) -> list[Path] | None:
    if args.src:
        if not args.src.is_dir():
            print(f"error: --src is not a folder: {args.src}", file=sys.stderr)
            return None
        inputs = sorted(q for q in args.src.rglob("*") if q.suffix.lower() in VIDEO_EXTS)[: args.videos]
        if not inputs:
            print(f"error: no videos under {args.src}", file=sys.stderr)
            return None
        return inputs
    t0 = time.perf_counter()
    inputs = make_inputs(tmp / "src", args.videos, seconds=args.seconds, size=args.size)
    print(f"wrote {len(inputs)} inputs ({args.size}, {args.seconds:g} s, MPEG-4 AVI) "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return inputs


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
    p.add_argument("--gop", type=int, default=16)
    p.add_argument("--reps", type=int, default=3, help="repetitions of (1) and (2), interleaved; medians reported")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.videos < 1 or args.workers < 1 or args.reps < 1:
        print("error: --videos, --workers and --reps must be >= 1", file=sys.stderr)
        return 2
    settings = EncodeSettings(codec=args.codec, fps=args.fps, short_side=args.short_side, gop=args.gop)
    cores = min(args.workers, os.cpu_count() or 1)

    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        tmp = Path(tmp)
        inputs = _inputs(args, tmp)
        if inputs is None:
            return 2
        jobs = [Job(source=q.name, rel=f"videos/{i:05d}{settings.ext}", label=0, subset="train", src_path=q)
                for i, q in enumerate(inputs)]
        res: dict = {"config": {"videos": len(jobs), "workers": args.workers, "cpus": os.cpu_count(),
                                "codec": settings.codec, "crf": settings.quality, "gop": settings.gop,
                                "short_side": settings.short_side, "fps": str(settings.fps), "reps": args.reps},
                     "loadavg_before": os.getloadavg()}
        reps: dict[str, list[dict]] = {"preprocess": [], "bare": []}
        outcomes: list = []
        for rep in range(args.reps):
            pre_out, bare_out = tmp / f"pre{rep}", tmp / f"bare{rep}"
            commands = [ffmpeg_command(j.src_path, bare_out / j.rel, settings) for j in jobs]

            def pre() -> None:
                outcomes[:] = run_preprocess(jobs, pre_out, settings, args.workers)

            order = [("preprocess", pre), ("bare", lambda: run_bare(commands, args.workers))]
            for name, run in order if rep % 2 == 0 else order[::-1]:
                reps[name].append(_measure(run))
                print(f"rep {rep}: {name:<10} {reps[name][-1]['wall_s']:7.2f} s wall", file=sys.stderr)
            if rep == 0:
                res["outputs_identical"] = all(_digest(pre_out / j.rel) == _digest(bare_out / j.rel) for j in jobs)
                res["commands_example"] = commands[0]
                frames = sum(o.info.num_frames for o in outcomes)
                mbytes = sum((pre_out / o.job.rel).stat().st_size for o in outcomes) / 1e6
                t0 = time.perf_counter()
                counted = [count_frames(pre_out / o.job.rel).num_frames for o in outcomes]
                verify_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                decoded = [probe_output(pre_out / o.job.rel).num_frames for o in outcomes]
                full_decode_s = time.perf_counter() - t0
                res["count_equals_full_decode"] = counted == decoded
                t0 = time.perf_counter()
                for q in inputs:
                    probe_source(q)
                probe_s = time.perf_counter() - t0
                startup_s = worker_startup_s(args.workers) if args.workers > 1 else 0.0
        res["loadavg_after"] = os.getloadavg()

    for name, rows in reps.items():
        wall = float(np.median([r["wall_s"] for r in rows]))
        cpu = float(np.median([r["cpu_s"] for r in rows]))
        res[name] = {"wall_s": wall, "cpu_s": cpu, "videos_per_s": len(jobs) / wall,
                     "videos_per_s_per_core": len(jobs) / wall / cores, "videos_per_cpu_s": len(jobs) / cpu,
                     "reps": rows}
    res["overhead_wall"] = res["preprocess"]["wall_s"] / res["bare"]["wall_s"]
    res["overhead_cpu"] = res["preprocess"]["cpu_s"] / res["bare"]["cpu_s"]
    res.update(frames=frames, output_mb=mbytes, verify_frames_per_s=frames / verify_s,
               parts_s={"worker_startup": startup_s, "probe_sources": probe_s, "verify_outputs": verify_s,
                        "full_decode_outputs": full_decode_s})

    print(f"codec {settings.codec} crf {settings.quality}, short side {settings.short_side}, {settings.fps} fps, "
          f"gop {settings.gop}, {len(jobs)} videos, workers {args.workers}, cpus {os.cpu_count()}")
    print(f"{'run':<34}{'wall s':>8}{'CPU s':>8}{'videos/s':>10}{'videos/s/core':>15}")
    for name, label in (("preprocess", "(1) preprocess (run_jobs)"), ("bare", "(2) bare ffmpeg, same arguments")):
        r = res[name]
        print(f"{label:<34}{r['wall_s']:>8.2f}{r['cpu_s']:>8.2f}{r['videos_per_s']:>10.2f}"
              f"{r['videos_per_s_per_core']:>15.3f}")
    print(f"medians of {args.reps} interleaved repetitions; load average {res['loadavg_before'][0]:.1f} -> "
          f"{res['loadavg_after'][0]:.1f}")
    print(f"(1)/(2) wall = {res['overhead_wall']:.2f}  (goal <= 1.2); CPU = {res['overhead_cpu']:.2f}; "
          f"outputs byte-identical: {'yes' if res['outputs_identical'] else 'NO'}")
    seconds_of_video = frames / float(settings.fps)
    print(f"output {mbytes:.2f} MB ({8 * mbytes / seconds_of_video * 1000:.0f} kbit/s), {frames} frames; "
          f"verification alone (1 process): {frames / verify_s:.0f} frames/s")
    print(f"what (1) adds, timed alone: {args.workers} spawned workers start in {startup_s:.2f} s; probing the "
          f"sources {probe_s:.2f} s and verifying the outputs {verify_s:.2f} s (1 process, all videos); the "
          f"full decode that verified them before issue 21: {full_decode_s:.2f} s, same frame counts: "
          f"{'yes' if res['count_equals_full_decode'] else 'NO'}")
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
