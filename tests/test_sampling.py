"""pipelines.sampling: the auxiliary clip's time offset (paper Sec. 3.3) and the ClipSpec / Kind objects."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines import sampling

# (frames, fps, t_s): K400's 10-s clips at 30 fps with t_s = 10 s, UCF-101's ~7-s videos at 25 fps, t_s = 5 s
CASES = [(300, 30.0, 10.0), (175, 25.0, 5.0)]


def _draws(num_frames, fps, t_s, n=20000):
    rng = np.random.default_rng(0)
    return np.array([sampling.window_starts(rng, num_frames, fps, (8, 8), (16, 4), t_s) for _ in range(n)])


@pytest.mark.parametrize("num_frames,fps,t_s", CASES)
def test_aux_offset_stays_in_range_without_piling_up_at_the_ends(num_frames, fps, t_s):
    starts = _draws(num_frames, fps, t_s)
    p, a = starts[:, 0], starts[:, 1]
    last = num_frames - 16 * 4
    assert a.min() >= 0 and a.max() <= last
    assert np.abs(a - p).max() <= round(t_s * fps)
    # Clamping a U[-t_s, t_s] shift put 31% (K400) / 56% (UCF) of the draws on the two end windows; drawn
    # from the valid range, each window gets its share: no start holds more than 3x the uniform 1/(last+1).
    counts = np.bincount(a, minlength=last + 1) / len(a)
    assert counts[0] < 3 / (last + 1) and counts[last] < 3 / (last + 1), (counts[0], counts[last])
    assert counts.max() < 3 / (last + 1)


def test_zero_offset_keeps_the_primary_start():
    starts = _draws(300, 30.0, 0.0, n=500)
    assert (starts[:, 0] == starts[:, 1]).all()
    short = _draws(40, 30.0, 0.0, n=50)  # A's 64-frame window does not fit: both start at 0
    assert (short == 0).all()


def test_clip_spec_checks_its_values():
    spec = sampling.ClipSpec(primary=[4, 8], aux=(8, 4), crop_size=32, short_side=40)
    assert spec.primary == (4, 8)  # normalised to a tuple of ints, so specs compare and hash
    for bad, words in (({"primary": (0, 8)}, "primary clip"), ({"time_offset": -1.0}, "time_offset"),
                       ({"crop_size": 64, "short_side": 40}, "crop_size 64"), ({"ra_ops": -1}, "ra_ops")):
        with pytest.raises(ValueError, match=words):
            sampling.ClipSpec(**bad)


def test_kinds_name_their_views_in_draw_order():
    assert sampling.LABELED.outputs == ("primary", "aux")
    assert sampling.UNLABELED.outputs == ("primary_weak", "primary_strong", "aux_weak", "aux_strong")
    spec = sampling.ClipSpec(crop_size=32, short_side=40)
    views = sampling.UNLABELED.draw_views(np.random.default_rng(1), spec)
    assert views["primary_weak"].ra is None and views["primary_strong"].ra.shape == (sampling.RA_NUM_OPS, 3)
    assert sampling.LABELED.tag != sampling.UNLABELED.tag
