"""pipelines/rand_augment.py: per-clip contrast and auto-contrast (CPU backend) against numpy."""
from __future__ import annotations

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def
from nvidia.dali.auto_aug import rand_augment as dali_rand_augment

from pipelines import rand_augment


def _clips() -> list[np.ndarray]:
    """Two FHWC uint8 clips whose frames have very different ranges, and one with a constant channel."""
    rng = np.random.default_rng(0)
    a = np.stack([rng.integers(10, 60, (6, 5, 3)), rng.integers(100, 220, (6, 5, 3)),
                  rng.integers(0, 256, (6, 5, 3))]).astype(np.uint8)
    b = rng.integers(30, 90, (2, 4, 4, 3)).astype(np.uint8)
    b[..., 1] = 77  # constant channel: auto-contrast must leave it as it is
    return [a, b]


def _run(augment) -> list[np.ndarray]:
    clips = _clips()

    @pipeline_def(batch_size=len(clips), num_threads=1, device_id=None, exec_dynamic=True)
    def pipe():
        return augment(fn.external_source(source=lambda: clips, batch=True, layout="FHWC"))

    p = pipe()
    p.build()
    (out,) = p.run()
    return [np.array(out[i]) for i in range(len(clips))]


# The fused form runs on the CPU backend, the arithmetic one on the GPU; both are checked here on the CPU.
@pytest.mark.parametrize("form", ["fused", "arithmetic"])
@pytest.mark.parametrize("factor", [1.9, 0.3])
def test_contrast_is_one_mapping_per_clip_around_its_mean_luma(factor, form):
    got = _run(lambda x: getattr(rand_augment, f"contrast_{form}")(x, factor))
    for clip, out in zip(_clips(), got):
        center = float((clip.reshape(-1, 3).astype(np.float64).mean(0) * [0.299, 0.587, 0.114]).sum())
        want = np.clip(np.round(center + (clip.astype(np.float64) - center) * factor), 0, 255)
        assert out.dtype == np.uint8 and out.shape == clip.shape
        np.testing.assert_allclose(out, want, atol=1)


def test_auto_contrast_stretches_each_channel_of_the_clip_to_full_range():
    got = _run(lambda x: rand_augment.clip_auto_contrast.op(x, None))
    for clip, out in zip(_clips(), got):
        c = clip.reshape(-1, 3).astype(np.float64)
        lo, hi = c.min(0), c.max(0)
        spread = np.where(hi > lo, hi - lo, 255.0)
        want = np.round((clip - np.where(hi > lo, lo, 0)) * (255.0 / spread))
        assert out.dtype == np.uint8
        np.testing.assert_allclose(out, want, atol=1)
    assert (got[1][..., 1] == 77).all()
    assert got[0].min() == 0 and got[0].max() == 255


def test_suite_is_dalis_with_two_ops_replaced_in_place():
    ours = [op.name for op in rand_augment.clip_suite()]
    dalis = [op.name for op in dali_rand_augment.get_rand_augment_suite(use_shape=True)]
    assert len(ours) == len(dalis)
    changed = {(d, o) for d, o in zip(dalis, ours) if d != o}
    assert changed == {("contrast", "clip_contrast"), ("auto_contrast", "clip_auto_contrast")}



def test_sharpness_and_equalize_are_dalis_without_its_deprecated_names():
    """clip_suite's sharpness / equalize: DALI's augmentations (same arguments, same output) calling fn.filter /
    fn.equalize, so building a pipeline prints no DeprecationWarning that users cannot act on."""
    import warnings

    from nvidia.dali.auto_aug import augmentations

    ours = {op.name: op for op in rand_augment.clip_suite()}
    for name in ("sharpness", "equalize"):
        theirs = getattr(augmentations, name)
        assert ours[name] is getattr(rand_augment, name)
        assert (ours[name].mag_range, ours[name].randomly_negate, ours[name].mag_to_param, ours[name].param_device) \
            == (theirs.mag_range, theirs.randomly_negate, theirs.mag_to_param, theirs.param_device)
    kernel = augmentations.sharpness_kernel(0.6)
    for name, param in (("sharpness", kernel), ("equalize", None)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = _run(lambda x: getattr(rand_augment, name).op(x, param))
        assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]
        with warnings.catch_warnings(record=True) as caught:  # DALI's own: the warning this test looks for
            want = _run(lambda x: getattr(augmentations, name).op(x, param))
        assert [w for w in caught if issubclass(w.category, DeprecationWarning)]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
