"""pipelines/: frame-exact DALI loaders (CPU backend) on tiny frame-indexed VP9 videos."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import pipelines
from pipelines import sampling
from pipelines.dataset import DatasetError
from pipelines.reference import reference_loader
from pipelines.testing import darkness, make_dataset, read_indices, stripe_masks

FPS = 25
T_S = 0.4  # seconds: aux offsets within +-10 frames
CLIPS = dict(primary=(4, 4), aux=(8, 2), crop_size=32, short_side=40)
LENGTHS = [48, 10, 60, 33]  # 10 < a clip's 16-frame span: padded


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), num_frames=LENGTHS, fps=FPS)


def _spec(time_offset=0.0, ra_ops=sampling.RA_NUM_OPS):
    return sampling.ClipSpec(**CLIPS, time_offset=time_offset, ra_ops=ra_ops)


def _train(root, labeled, time_offset=0.0, ra_ops=sampling.RA_NUM_OPS, **kw):
    args = dict(split="1pct_seed0", device="cpu", with_indices=True, spec=_spec(time_offset, ra_ops))
    args.update(kw)
    return pipelines.train_loader(root, "labeled" if labeled else "unlabeled", **args)


def _check_clip_rules(idx: np.ndarray, n: int, frames: int, stride: int):
    """Indices are start + stride*k clamped to the last frame, with the window inside the video if it fits."""
    start = int(idx[0])
    assert 0 <= start <= max(0, n - frames * stride)
    np.testing.assert_array_equal(idx, np.minimum(start + stride * np.arange(frames), n - 1))


def _assert_same_geometry(clip: torch.Tensor):
    """Crop and flip identical on every frame: the static stripes sit on the same pixels."""
    dark = darkness(clip)
    sure = (dark < 0.3) | (dark > 0.7)  # pixels half-covered by a stripe edge depend on the frame's color
    both = sure & sure[0]
    assert both.float().mean() > 0.8
    differ = ((dark < 0.5) != (dark[0] < 0.5)) & both
    assert (dark[0] < 0.3).any() and (dark[0] > 0.7).any()
    assert differ.float().mean(dim=(1, 2)).max() < 0.005


def test_unlabeled_frames_exact_offsets_and_padding(root):
    loader = _train(root, False, batch_size=3, time_offset=T_S, ra_ops=0)
    n_unlabeled = len(loader.plan.records)
    assert len(loader) == n_unlabeled // 3
    deltas, seen_short = [], False
    for pos in range(len(loader)):
        specs = loader.plan.batch(0, pos)
        b = next(loader)
        assert b["primary_weak"].shape == (3, 3, 4, 32, 32) and b["aux_strong"].shape == (3, 3, 8, 32, 32)
        assert b["primary_weak"].dtype == torch.float32 and b["label"].dtype == torch.int64
        for i, spec in enumerate(specs):
            n = spec.record.num_frames
            p_idx, a_idx = b["primary_indices"][i].numpy(), b["aux_indices"][i].numpy()
            assert b["label"][i] == spec.record.label
            _check_clip_rules(p_idx, n, 4, 4)
            _check_clip_rules(a_idx, n, 8, 2)
            for name, idx in (("primary", p_idx), ("aux", a_idx)):
                assert read_indices(b[f"{name}_weak"][i]) == idx.tolist()
                assert read_indices(b[f"{name}_strong"][i]) == idx.tolist()  # weak and strong share frames
                for view in ("weak", "strong"):
                    _assert_same_geometry(b[f"{name}_{view}"][i])
            if n < 16:
                seen_short = True
                assert p_idx[-1] == a_idx[-1] == n - 1  # padded by repeating the last frame
            else:
                deltas.append(int(a_idx[0]) - int(p_idx[0]))
    assert seen_short
    assert all(abs(d) <= round(T_S * FPS) for d in deltas)
    assert min(deltas) < 0 < max(deltas)  # the offset goes both ways


def test_unlabeled_strong_randaugment_one_draw_per_clip(root):
    loader = _train(root, False, batch_size=9, time_offset=T_S)  # default: 2 RandAugment ops
    b = next(loader)
    checked = 0
    for name in ("primary", "aux"):
        idx, weak, strong = b[f"{name}_indices"], b[f"{name}_weak"], b[f"{name}_strong"]
        assert strong.shape == weak.shape and torch.isfinite(strong).all()
        assert (strong - weak).abs().mean() > 0.05  # the strong view is augmented
        for i in range(len(idx)):
            for t in range(1, idx.shape[1]):
                if idx[i, t] == idx[i, t - 1]:  # the same source frame must come out identical
                    torch.testing.assert_close(strong[i, :, t], strong[i, :, t - 1])
                    checked += 1
    assert checked > 0


def test_labeled_frames_exact(root):
    loader = _train(root, True, batch_size=2, time_offset=T_S)
    assert len(loader) == 1  # 3 labeled videos, batch of 2, drop_last
    for _ in range(3):
        b = next(loader)
        assert set(b) == {"primary", "aux", "label", "primary_indices", "aux_indices"}
        for i in range(2):
            for name in ("primary", "aux"):
                assert read_indices(b[name][i]) == b[f"{name}_indices"][i].tolist()
                _assert_same_geometry(b[name][i])
    assert loader.epoch == 3


def test_tiny_labeled_set_fills_a_batch(root):
    loader = _train(root, True, batch_size=5)
    b = next(loader)
    assert b["primary"].shape[0] == 5 and len(loader) == 1
    assert set(b["label"].tolist()) == {0, 1, 2}


def test_eval_views_cover_video_uniformly(root):
    loader = pipelines.eval_loader(root, batch_size=2, device="cpu", crop_size=32, short_side=40, frames=4,
                                   stride=4, with_indices=True)
    seen = 0
    for b in loader:
        n_batch = b["video"].shape[0]
        assert b["video"].shape[1:] == (30, 3, 4, 32, 32) and b["indices"].shape == (n_batch, 10, 4)
        for i in range(n_batch):
            idx = b["indices"][i].numpy()
            n = LENGTHS[(12 + seen) % len(LENGTHS)]  # val videos follow the 12 train videos in make_dataset
            starts = idx[:, 0]
            assert starts[0] == 0 and starts[-1] == max(0, n - 16)
            assert np.ptp(np.diff(starts)) <= 1  # evenly spread
            for c in range(10):
                _check_clip_rules(idx[c], n, 4, 4)
                masks = []
                for k in range(3):
                    view = b["video"][i, c * 3 + k]
                    assert read_indices(view) == idx[c].tolist()
                    _assert_same_geometry(view)
                    masks.append(stripe_masks(view)[0])
                assert not torch.equal(masks[0], masks[2])  # left and right crops differ (landscape video)
            seen += 1
    assert seen == 3


def test_shards_disjoint_covering_and_reshuffled():
    for n, ws in ((12, 3), (10, 4)):
        kw = dict(seed=5, tag=1, batch_size=2, drop_last=False)
        shards = [sampling.epoch_slots(n, epoch=0, rank=r, world_size=ws, **kw)[0] for r in range(ws)]
        ids = np.concatenate(shards)
        assert set(ids.tolist()) == set(range(n))
        assert len(ids) - len(set(ids.tolist())) == (-n) % ws  # only DistributedSampler-style padding repeats
        again = sampling.epoch_slots(n, epoch=0, rank=0, world_size=ws, **kw)[0]
        np.testing.assert_array_equal(again, shards[0])
        next_epoch = [sampling.epoch_slots(n, epoch=1, rank=r, world_size=ws, **kw)[0] for r in range(ws)]
        assert any(not np.array_equal(a, b) for a, b in zip(shards, next_epoch))


def test_rank_loaders_read_disjoint_videos(root):
    seen = []
    for rank in range(2):
        loader = _train(root, False, batch_size=2, rank=rank, world_size=2, ra_ops=0)
        seen.append({s.record.rel for pos in range(len(loader)) for s in loader.plan.batch(0, pos)})
    assert not seen[0] & seen[1]


def test_same_seed_same_batches_and_resume(root):
    a = _train(root, False, batch_size=2, seed=3, time_offset=T_S, ra_ops=0)
    first = [next(a) for _ in range(3)]
    b = _train(root, False, batch_size=2, seed=3, time_offset=T_S, ra_ops=0)
    next(b)
    state = b.state_dict()
    assert state["epoch"] == 0 and state["position"] == 1
    c = _train(root, False, batch_size=2, seed=3, time_offset=T_S, ra_ops=0)
    c.load_state_dict(state)
    for want in first[1:]:
        got = next(c)
        for k in want:
            torch.testing.assert_close(got[k], want[k])
    other = _train(root, False, batch_size=2, seed=4, time_offset=T_S, ra_ops=0)
    assert not all(torch.equal(next(other)[k], first[0][k]) for k in ("primary_indices", "aux_indices"))


def test_reference_agrees_with_dali(root):
    kw = dict(split="1pct_seed0", batch_size=3, spec=_spec(T_S, ra_ops=0), with_indices=True)
    dali = pipelines.unlabeled_loader(root, device="cpu", **kw)
    ref = iter(reference_loader(root, kind="unlabeled", num_workers=0, **kw))
    for _ in range(2):
        d, r = next(dali), next(ref)
        assert d.keys() == r.keys()
        for k in d:
            assert d[k].shape == r[k].shape and d[k].dtype == r[k].dtype, k
        for k in ("primary_indices", "aux_indices", "label"):
            torch.testing.assert_close(d[k], r[k])
        for k in ("primary_weak", "primary_strong", "aux_weak", "aux_strong"):
            assert (d[k] - r[k]).abs().mean() < 0.1, k  # resize kernels differ slightly
            assert -2.2 < d[k].min() and d[k].max() < 2.7 and -2.2 < r[k].min() and r[k].max() < 2.7


def _copy(root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_bad_folder_errors(root, tmp_path):
    with pytest.raises(DatasetError, match="not a preprocess output.*classes.txt"):
        pipelines.unlabeled_loader(tmp_path, split="1pct_seed0", batch_size=1, device="cpu")
    bad = _copy(root, tmp_path)
    (bad / "train.csv").write_text("file,label\nx.webm,0\n")
    with pytest.raises(DatasetError, match="header"):
        pipelines.labeled_loader(bad, split="1pct_seed0", batch_size=1, device="cpu")
    (bad / "train.csv").write_text("path,label,num_frames,fps,width,height\n../outside.webm,0,10,25,64,48\n")
    with pytest.raises(DatasetError, match="outside.webm"):
        pipelines.labeled_loader(bad, split="1pct_seed0", batch_size=1, device="cpu")
    with pytest.raises(DatasetError, match="no such split"):
        pipelines.unlabeled_loader(root, split="nope", batch_size=1, device="cpu")


def test_undecodable_file_names_it(root, tmp_path):
    bad = _copy(root, tmp_path)
    lines = (bad / "splits" / "1pct_seed0.txt").read_text().split()
    victim = bad / lines[0]
    victim.write_bytes(b"\x1a\x45\xdf\xa3 this is not a video" * 10)
    loader = _train(bad, True, batch_size=3)
    with pytest.raises(DatasetError, match=f"{victim.name}.*rerun preprocess"):
        next(loader)
