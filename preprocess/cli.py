"""Options shared by the dataset commands, and the error handling of their entry points."""
from __future__ import annotations

import argparse
import os
import sys
from fractions import Fraction
from typing import Callable

from preprocess import PreprocessError
from preprocess.dataset_writer import Summary
from preprocess.encode import CODECS, EncodeSettings
from preprocess.shards import Shard


def _fraction(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a frame rate: {text!r} (use 25, 29.97 or 30000/1001)")
    if value <= 0:
        raise argparse.ArgumentTypeError("frame rate must be positive")
    return value.limit_denominator(100000)


def add_encode_args(p: argparse.ArgumentParser, *, fps: int, short_side: int = 256) -> None:
    g = p.add_argument_group("encoding")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: all cores)")
    g.add_argument("--codec", choices=sorted(CODECS), default="vp9",
                   help="vp9 (.webm, CPU and GPU DALI decode) or h264 (.mp4, GPU decode only)")
    g.add_argument("--fps", type=_fraction, default=Fraction(fps),
                   help=f"constant output frame rate (default {fps})")
    g.add_argument("--gop", type=int, default=16, help="keyframe interval in frames (default 16)")
    g.add_argument("--short-side", type=int, default=short_side,
                   help=f"output short side in pixels (default {short_side})")
    g.add_argument("--crf", type=int, default=None, help="constant quality (default: vp9 32, h264 23)")
    g.add_argument("--limit", type=int, default=None, help="only the first N videos of each list (trial run)")


def add_shard_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (one task per shard, then a join; see preprocess/shards.py)")
    g.add_argument("--shard", metavar="K/N",
                   help="encode only shard K of N (K = 0..N-1) and write no manifest; the N shards may run "
                        "at the same time on one OUT")
    g.add_argument("--merge", action="store_true",
                   help="join the finished shards: write the manifests, encode nothing (exit 2 if a video is "
                        "in no shard's results); a plain rerun joins too and encodes what is left")


def shard_from_args(args: argparse.Namespace) -> Shard | None:
    """The --shard of `args` (None: no sharding); PreprocessError for a malformed value or --merge with it."""
    if args.shard is None:
        return None
    if args.merge:
        raise PreprocessError("--merge joins the shards: give it without --shard")
    return Shard.parse(args.shard)


def settings_from_args(args: argparse.Namespace) -> EncodeSettings:
    if args.workers < 1:
        raise PreprocessError("--workers must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise PreprocessError("--limit must be at least 1")
    try:
        return EncodeSettings(codec=args.codec, fps=args.fps, gop=args.gop, short_side=args.short_side,
                              crf=args.crf)
    except ValueError as e:
        raise PreprocessError(str(e)) from None


def run_cli(build: Callable[[], Summary]) -> int:
    """Run a dataset build: print the summary; exit 0 (all good), 1 (some videos failed), 2 (user error)."""
    try:
        summary = build()
    except PreprocessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    print(summary)
    if summary.failed:
        print("failed videos are listed in failures.csv", file=sys.stderr)
    return summary.exit_code
