"""Re-encode one video into the dataset format, then verify and measure the result.

Output format: constant frame rate, short side scaled to `short_side` (aspect kept, both sides even),
a keyframe every `gop` frames, no B-frames and no hidden/alt-ref frames (so every packet is one shown
frame and seeking to a keyframe is exact), yuv420p, no audio, no metadata.

- VP9 (default, `.webm`): libvpx-vp9 `-deadline realtime -cpu-used 8` with constant quality CRF 32. The
  realtime mode is ~5x faster than `good` at the same CRF; at CRF 32 the artefacts are well below what the
  training augmentations do to a frame. Both DALI backends decode VP9.
- H.264 (`.mp4`): libx264 `-preset veryfast -crf 23 -bf 0`, closed GOPs; GPU ('mixed') DALI backend only.

One ffmpeg thread per video: callers parallelize over videos, which scales better than threads inside
one small video. The ffmpeg binary is the one shipped by the `imageio-ffmpeg` wheel; PyAV probes inputs
and reads the output's packets to count its frames (`count_frames`: one packet per shown frame, checked,
and the first frame decoded; `probe_output` decodes every frame, for files this module did not write).
Bit-exact flags make the output depend only on the input frames and the settings (tests compare file
hashes).
"""
from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODECS = {"vp9": ".webm", "h264": ".mp4"}
DEFAULT_CRF = {"vp9": 32, "h264": 23}
# A decoded output shorter than this fraction of the source's declared duration counts as truncated.
MIN_DURATION_RATIO = 0.9


class EncodeError(Exception):
    """One video could not be converted; the message is the reason written to failures.csv."""


@dataclass(frozen=True, kw_only=True)
class EncodeSettings:
    """How every video of one dataset is re-encoded."""

    codec: str = "vp9"
    fps: Fraction = Fraction(25)
    gop: int = 16
    short_side: int = 256
    crf: int | None = None  # None: DEFAULT_CRF[codec]

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        if self.fps <= 0 or self.gop < 1:
            raise ValueError("fps and gop must be positive")
        if self.short_side < 2 or self.short_side % 2:
            raise ValueError(f"short side must be a positive even number, got {self.short_side}")

    @property
    def ext(self) -> str:
        return CODECS[self.codec]

    @property
    def quality(self) -> int:
        return DEFAULT_CRF[self.codec] if self.crf is None else self.crf

    def fingerprint(self) -> str:
        """Everything that changes the output bytes; a finished video is reused only if this matches."""
        return f"{self.codec}|fps={self.fps}|gop={self.gop}|short={self.short_side}|crf={self.quality}"


@dataclass(frozen=True)
class VideoInfo:
    """Measured from the re-encoded file."""

    num_frames: int
    width: int
    height: int
    fps: float = 0.0  # the container's average rate (0: unknown)


@functools.cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def ffmpeg_version() -> str:
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=False).stdout
    return out.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" Copyright")[0]


def _filters(s: EncodeSettings, sar: Fraction | None) -> str:
    chain = [f"fps={s.fps}"]
    if sar is not None and sar not in (0, 1):
        # Anamorphic source: make pixels square first so "short side" means the displayed one.
        chain.append("scale='trunc(iw*sar/2)*2':ih")
    # -2: the other side keeps the aspect ratio, rounded to an even number (yuv420p needs even sizes).
    n = s.short_side
    chain.append(f"scale=w='if(lt(iw,ih),{n},-2)':h='if(lt(iw,ih),-2,{n})'")
    chain += ["setsar=1", "format=yuv420p"]
    return ",".join(chain)


def _codec_args(s: EncodeSettings) -> list[str]:
    gop = ["-g", str(s.gop), "-keyint_min", str(s.gop),
           "-force_key_frames", f"expr:eq(mod(n,{s.gop}),0)"]
    if s.codec == "vp9":
        codec = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                 "-crf", str(s.quality), "-b:v", "0", "-lag-in-frames", "0", "-auto-alt-ref", "0"]
        container = ["-f", "webm"]
    else:
        codec = ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(s.quality), "-bf", "0",
                 "-sc_threshold", "0", "-x264-params", "open-gop=0"]
        container = ["-movflags", "+faststart", "-f", "mp4"]
    return [*codec, *gop, "-threads", "1", "-an", "-sn", "-dn", "-map_metadata", "-1",
            "-map_chapters", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", *container]


# The `-NAME VALUE` pairs of `_codec_args` that are options of the encoder itself (libavcodec AVOptions); the
# others belong to the ffmpeg CLI or the muxer (-force_key_frames, -an, -map_metadata, -fflags, -f, -movflags).
_ENCODER_OPTION_NAMES = frozenset({"g", "keyint_min", "crf", "b:v", "deadline", "cpu-used", "lag-in-frames",
                                   "auto-alt-ref", "preset", "bf", "sc_threshold", "x264-params", "threads",
                                   "flags:v"})


def encoder_options(s: EncodeSettings) -> tuple[str, dict[str, str]]:
    """(libavcodec encoder name, {AVOption: value}) of the ffmpeg command for `s`.

    For writers that drive the same encoder through PyAV (`add_stream(name)`, `stream.options = options`)
    where the ffmpeg CLI is absent. Read off `_codec_args`, so the two cannot drift; stream specifiers are
    dropped ("b:v" -> "b"). Left out, as CLI-only: `-force_key_frames` (with keyint_min = g and no scene
    cuts the GOP is fixed anyway) and the container flags. The frame rate is `s.fps`; no scaling is done.
    """
    args = _codec_args(s)
    options = {name[1:].split(":")[0]: value for name, value in zip(args, args[1:])
               if name.startswith("-") and name[1:] in _ENCODER_OPTION_NAMES}
    return args[args.index("-c:v") + 1], options


def _run_ffmpeg(args: list[str], tmp: Path, *, stdin: bytes | None, timeout: float,
                src: Path | None = None) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-v", "error", "-y", *args, str(tmp)]
    try:
        proc = subprocess.run(cmd, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EncodeError(f"ffmpeg timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        for path, name in ((tmp, "output"), (src, "input")):
            why = why.replace(str(path), name) if path is not None else why
        raise EncodeError(f"ffmpeg failed: {why}")


def _why(e: Exception) -> str:
    """The error without the file name (failures.csv names the source once, relative to SRC)."""
    return getattr(e, "strerror", None) or str(e)


def probe_output(path: Path) -> VideoInfo:
    """Decode every frame of a re-encoded file: this both verifies it and gives the true frame count."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            n = sum(1 for _ in container.decode(stream))
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate or 0)
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise EncodeError(f"output does not decode: {_why(e)}") from None
    if n == 0:
        raise EncodeError("no frames decoded")
    return VideoInfo(n, width, height, fps)


def count_frames(path: Path) -> VideoInfo:
    """Verify a file this module wrote and count its frames by reading its packets, decoding only the first.

    The count is the one the loaders decode: DALI counts a WebM's frames as its video packets and returns the
    i-th decoded frame as frame i, and this module's outputs hold one shown frame per packet (no B-frames, no
    alt-ref or other hidden frames, `_codec_args`). That is checked here, not assumed: every packet must have
    a timestamp later than the one before (a hidden frame or a reordered one would break it), the first must
    be a keyframe, and the first frame must decode at the stream's size. A full decode (`probe_output`)
    cost ~20x more (76 ms/video against ~4, bench/RESULTS.md) and gave the same counts; what it checked
    besides, that every later packet decodes without error, is what ffmpeg just wrote with exit code 0.
    """
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            n, last_pts, first = 0, None, None
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's empty end-of-stream packet
                    continue
                if packet.pts is None or (last_pts is not None and packet.pts <= last_pts):
                    raise EncodeError(f"packet {n} has no timestamp or is out of order: not one frame per packet")
                if first is None:
                    if not packet.is_keyframe:
                        raise EncodeError("the first packet is not a keyframe")
                    first = packet
                last_pts = packet.pts
                n += 1
            if first is None:
                raise EncodeError("no frames decoded")
            ctx = stream.codec_context
            decoded = list(ctx.decode(first)) + list(ctx.decode(None))  # flush: a frame-threaded decoder may hold it
            width, height = ctx.width, ctx.height
            fps = float(stream.average_rate or 0)
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise EncodeError(f"output does not decode: {_why(e)}") from None
    if not decoded or (decoded[0].width, decoded[0].height) != (width, height):
        raise EncodeError("output does not decode: its first frame gives no picture of the stream's size")
    return VideoInfo(n, width, height, fps)


def probe_source(path: Path) -> tuple[float | None, Fraction | None]:
    """Declared video duration in seconds (None if unknown) and sample aspect ratio of the input."""
    if not path.is_file():
        raise EncodeError("missing")
    if path.stat().st_size == 0:
        raise EncodeError("empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise EncodeError("no video stream")
            st = container.streams.video[0]
            estimates = []
            if st.frames and st.average_rate:
                estimates.append(st.frames / float(st.average_rate))  # AVI headers keep the full count
            if st.duration and st.time_base:
                estimates.append(float(st.duration * st.time_base))
            if not estimates and container.duration:  # container duration may include longer audio
                estimates.append(container.duration / av.time_base)
            sar = st.codec_context.sample_aspect_ratio
            return (max(estimates) if estimates else None), (Fraction(sar) if sar else None)
    except av.error.FFmpegError as e:
        raise EncodeError(f"unreadable: {_why(e)}") from None


def verify_output(path: Path, s: EncodeSettings, expected_s: float | None) -> VideoInfo:
    """Count `path`'s frames (`count_frames`) and check it against the settings and the source's duration
    (seconds)."""
    info = count_frames(path)
    if min(info.width, info.height) != s.short_side or info.width % 2 or info.height % 2:
        raise EncodeError(f"output is {info.width}x{info.height}, expected short side {s.short_side}")
    if info.fps and abs(info.fps / float(s.fps) - 1) > 0.01:  # webm stores ms: 29.97 reads as ~29.97
        raise EncodeError(f"output runs at {info.fps:.3f} fps, expected {float(s.fps):.3f}")
    if expected_s is not None:
        expected = expected_s * float(s.fps)
        if info.num_frames < MIN_DURATION_RATIO * expected - 2:
            raise EncodeError(f"truncated or corrupt: {info.num_frames} frames, "
                              f"header promises ~{expected:.0f}")
    return info


def _finish(tmp: Path, dst: Path, expected_s: float | None, s: EncodeSettings) -> VideoInfo:
    try:
        info = verify_output(tmp, s, expected_s)
        os.replace(tmp, dst)
        return info
    finally:
        tmp.unlink(missing_ok=True)


def temp_path(dst: Path) -> Path:
    """Where `dst` is written before it is verified (hidden, same folder so os.replace is atomic)."""
    return dst.with_name(f".{dst.name}.partial-{os.getpid()}")


def encode_file(src: Path, dst: Path, s: EncodeSettings) -> VideoInfo:
    """Re-encode the video file `src` to `dst`; `dst` appears only once the result is verified (`verify_output`).

    Raises EncodeError with the reason if the input is missing, empty, unreadable or truncated.
    """
    expected_s, sar = probe_source(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    # Generous timeout: a hung decoder on a corrupt file must not stall the whole run.
    timeout = 300 + 20 * (expected_s or 60)
    args = ["-i", str(src), "-map", "0:v:0", "-vf", _filters(s, sar), *_codec_args(s)]
    try:
        _run_ffmpeg(args, tmp, stdin=None, timeout=timeout, src=src)
    except EncodeError:
        tmp.unlink(missing_ok=True)
        raise
    return _finish(tmp, dst, expected_s, s)


def encode_frames(frames: np.ndarray, dst: Path, s: EncodeSettings) -> VideoInfo:
    """Encode generated RGB frames `(T, H, W, 3)` uint8, taken to be at `s.fps`, to `dst`."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(s.fps), "-i", "pipe:0",
            "-vf", _filters(s, None), *_codec_args(s)]
    try:
        _run_ffmpeg(args, tmp, stdin=np.ascontiguousarray(frames).tobytes(), timeout=300 + t)
    except EncodeError:
        tmp.unlink(missing_ok=True)
        raise
    return _finish(tmp, dst, t / float(s.fps), s)
