"""preprocess.encode.count_frames: the cheap verification gives the full decode's frame count, or refuses."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from preprocess.encode import EncodeError, EncodeSettings, count_frames, encode_frames, probe_output, verify_output


def _frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(n)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 2 * i, axis=1) for i in range(n)])


@pytest.mark.parametrize("codec,n,gop", [("vp9", 37, 16), ("vp9", 80, 8), ("h264", 45, 16)])
def test_count_equals_the_full_decode(tmp_path, codec, n, gop):
    s = EncodeSettings(codec=codec, short_side=48, gop=gop, fps=Fraction(25))
    out = tmp_path / f"v{s.ext}"
    info = encode_frames(_frames(n), out, s)  # verified by count_frames
    assert info == probe_output(out) == count_frames(out)
    assert info.num_frames == n and (info.width, info.height) == (64, 48)


def test_b_frames_are_refused(tmp_path):
    """Reordered frames (B-frames) break "one frame per packet, in order": refused, not miscounted."""
    path = tmp_path / "b.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        st.options = {"bf": "2", "g": "12"}
        for f in _frames(24):
            c.mux(st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(st.encode())
    assert probe_output(path).num_frames == 24
    with pytest.raises(EncodeError, match="out of order"):
        count_frames(path)


def test_truncated_output_is_refused(tmp_path):
    s = EncodeSettings(short_side=48, gop=16, fps=Fraction(25))
    out = tmp_path / "v.webm"
    encode_frames(_frames(100), out, s)
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(EncodeError, match="truncated"):
        verify_output(out, s, expected_s=4.0)
    out.write_bytes(b"\x1a\x45\xdf\xa3 not a video")
    with pytest.raises(EncodeError, match="does not decode"):
        count_frames(out)
