"""Iterators over DALI pipeline runs that yield dicts of torch tensors (docs/ARCHITECTURE.md section 2).

A loader computes each batch's samples in Python (`sampling.py`), feeds encoded file bytes and the
per-sample parameters to its DALI pipeline through `external_source`, and copies the outputs into torch
tensors on the training device. A reader thread draws the next batches and reads their files ahead of the
pipeline (`_Runner`), so neither runs on the training thread; DALI prefetches ahead too; the loader keeps the
in-flight batches in order, so it knows which files a failing run was decoding. On the GPU, labels and
indices travel through pinned memory with non_blocking copies: nothing in `next()` waits for the GPU, so the
trainer's data wait is only the wait for a batch.
"""
from __future__ import annotations

import collections
import queue
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from pipelines import dali_pipelines as dp
from pipelines import sampling
from pipelines.dataset import DatasetError, VideoRecord, read_split, read_subset
from pipelines.device import check_gpu_decodable, dali_device, resolve_device

CPU_CODECS = ("vp8", "vp9", "mjpeg")


def _diagnose(path: Path, device: str) -> str:
    """A short reason why DALI may refuse this file (codec unsupported on CPU, or unreadable)."""
    import av  # only on the error path

    try:
        with av.open(str(path)) as c:
            codec = c.streams.video[0].codec_context.name
    except Exception as e:  # noqa: BLE001 - any failure here is the diagnosis
        return f"unreadable container ({type(e).__name__}: {e})"
    if device == "cpu" and codec not in CPU_CODECS:
        return f"codec {codec} needs device='cuda'; the CPU backend decodes {'/'.join(CPU_CODECS)} only"
    return f"codec {codec}"


# Batches the reader thread prepares ahead of DALI's own prefetch queue (encoded bytes of ~B files each);
# 0: no reader thread, batches are made and read inside DALI's callback on the training thread (as before
# issue 19; the tests compare the two).
READ_AHEAD = 2


def _read_ahead(runner_ref: weakref.ref, out: queue.Queue, stop: threading.Event) -> None:
    """The reader thread: `(kind, batch, packed)` items in feed order -- ("ok", samples, pipeline inputs),
    then ("stop", ...) at the end of a finite loader or ("error", exception, None). It holds its runner only
    through a weak reference between batches, so a dropped runner ends it."""
    while not stop.is_set():
        runner = runner_ref()
        if runner is None:
            return
        make, pack = runner._make_batch, runner._pack
        del runner
        try:
            batch = make()  # sampling; raises StopIteration at the end of a finite loader
            item: tuple = ("ok", batch, pack(batch))  # pack reads the files
        except StopIteration:
            item = ("stop", None, None)
        except BaseException as e:  # noqa: BLE001 - raised again on the training thread, in feed order
            item = ("error", e, None)
        del make, pack
        while True:
            if stop.is_set() or runner_ref() is None:
                return
            try:
                out.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        if item[0] != "ok":
            return


class _Runner:
    """Owns one DALI pipeline fed by `make_batch()` and converts its outputs to torch tensors.

    `make_batch()` and `pack()` (the file reads) run on a reader thread, READ_AHEAD batches ahead, in the
    same order as ever: the batches, and so the results, are those of a single-threaded loader.
    """

    def __init__(self, build: Callable[[Callable], Any], make_batch: Callable[[], list], pack: Callable,
                 device: str):
        self.device = device
        self._make_batch, self._pack = make_batch, pack
        self.inflight: collections.deque = collections.deque()
        self._ready: queue.Queue | None = queue.Queue(maxsize=READ_AHEAD) if READ_AHEAD > 0 else None
        self._stop = threading.Event()
        self._end: tuple | None = None  # the reader's last item, once it stopped
        if self._ready is not None:
            threading.Thread(target=_read_ahead, args=(weakref.ref(self), self._ready, self._stop), daemon=True,
                             name="pipelines-reader").start()
        with warnings.catch_warnings():
            # DALI's auto_aug still calls fn.experimental aliases; unused RandAugment inputs when ra_ops=0
            warnings.filterwarnings("ignore", message=".*fn.experimental.*deprecated")
            warnings.filterwarnings("ignore", message=".*outputs at the indices.*are not used")
            self.pipe = build(self._source)
            self.pipe.build()

    def close(self) -> None:
        """Stop the reader thread (its prepared batches are dropped)."""
        self._stop.set()

    def __del__(self) -> None:
        self._stop.set()

    def _source(self):
        if self._ready is None:  # READ_AHEAD = 0: on this thread
            batch = self._make_batch()  # raises StopIteration at the end of a finite loader
            self.inflight.append(batch)
            return self._pack(batch)
        item = self._end or self._ready.get()
        kind, batch, packed = item
        if kind != "ok":
            self._end = item
            if kind == "stop":
                raise StopIteration
            raise batch
        self.inflight.append(batch)
        return packed

    def run(self) -> tuple[list[torch.Tensor], list]:
        """Outputs of the oldest in-flight batch, as torch tensors, and that batch's samples."""
        try:
            outs = self.pipe.run()
        except StopIteration:
            raise
        except Exception as e:
            raise self._decode_error(e) from None
        batch = self.inflight.popleft()
        return [self._to_torch(o) for o in outs], batch

    def _to_torch(self, out) -> torch.Tensor:
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        t = out.as_tensor()
        if self.device == "cuda":
            dst = torch.empty(t.shape(), dtype=to_torch_type[t.dtype], device="cuda")
            return feed_ndarray(t, dst, cuda_stream=torch.cuda.current_stream())
        # Zero-copy: with the dynamic executor (see _pipe_device) an output buffer stays alive, and is not
        # reused, while the torch tensor references it.
        return torch.from_dlpack(t)

    def _decode_error(self, err: Exception) -> DatasetError:
        """Name the file DALI failed on: re-decode each in-flight sample alone to find it."""
        records = [s.record for batch in self.inflight for s in batch]
        unions = [_union_of(s) for batch in self.inflight for s in batch]
        first_line = dali_reason(err)
        for rec, union in zip(records, unions):
            if not _decodes(rec.path, union, self.device):
                return DatasetError(
                    f"{rec.path}: cannot be decoded ({_diagnose(rec.path, self.device)}; DALI: {first_line[:200]});"
                    " rerun preprocess on this dataset")
        names = ", ".join(str(r.path) for r in records[:8])
        return DatasetError(f"DALI failed on a batch of {names}: {first_line[:300]}; rerun preprocess if a file is bad")


def dali_reason(err: BaseException) -> str:
    """The line of a DALI error that says why (e.g. "Video is too small in at least one dimension", an
    out-of-bounds frame index), not the "Critical error in pipeline" / operator / traceback lines around it."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if "encountered:" in lines:  # DALI: "Error in ... operator", its Python traceback, "encountered:", reason
        after = lines[lines.index("encountered:") + 1:]
        if after:
            return after[0]
    noise = ("Critical error", "Error in ", "which was used", "File ", "C++ context", "Current pipeline")
    useful = [ln for ln in lines if not ln.startswith(noise)]
    return (useful or lines or [type(err).__name__])[0]


def _union_of(sample) -> np.ndarray:
    if isinstance(sample, sampling.TrainSample):
        return sampling.union_positions(sample.primary_indices, sample.aux_indices)[0]
    return sampling.union_positions(sample.indices.reshape(-1))[0]


def _decodes(path: Path, union: np.ndarray, device: str) -> bool:
    """Whether DALI decodes these frames of this one file (used only to locate a failure)."""
    def source():
        return [np.fromfile(path, np.uint8)], [union.astype(np.int32)]

    pipe = dp.decode_pipeline(source, device=dali_device(device), batch_size=1, num_threads=1, **_pipe_device(device),
                              prefetch_queue_depth=1)
    try:
        pipe.build()
        pipe.run()
        return True
    except Exception:  # noqa: BLE001 - failure is the answer
        return False
    finally:
        del pipe


def _pipe_device(device: str) -> dict:
    """Pipeline arguments for the device. On the CPU the dynamic executor lets `_Runner` hand DALI's output
    buffers to torch without a copy (the static executor recycles them at the next run)."""
    if device == "cuda":
        return {"device_id": torch.cuda.current_device()}
    return {"device_id": None, "exec_dynamic": True}


def to_loader_device(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array (labels, indices) as a tensor on `device`. On CUDA through pinned memory with a
    non_blocking copy, queued on the current stream: it never waits for the GPU (a copy from pageable
    memory would wait for the step already queued, and the trainer would count that as data wait)."""
    t = torch.from_numpy(np.ascontiguousarray(values))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def resize_target(records: list[VideoRecord], short_side: int) -> int | None:
    """`short_side`, or None when every video already has that short side (preprocess writes them so)."""
    return None if all(min(r.width, r.height) == short_side for r in records) else short_side


class TrainLoader:
    """Infinite iterator of training batches (dicts of `(N, C, T, H, W)` float tensors), epoch by epoch.

    `len(loader)` is batches per epoch for this rank; `loader.epoch` is the epoch of the next batch;
    `state_dict()` / `load_state_dict()` save and restore (epoch, position) exactly.
    """

    def __init__(self, records: list[VideoRecord], *, kind: sampling.Kind, batch_size: int,
                 spec: sampling.ClipSpec, device: str | None, seed: int, rank: int, world_size: int,
                 with_indices: bool, num_threads: int, drop_last: bool):
        if not records:
            raise DatasetError(f"no {kind.name} videos to load")
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        self.plan = sampling.TrainPlan(records, kind, batch_size, spec, seed, rank, world_size, drop_last)
        self.device = resolve_device(device)
        check_gpu_decodable(records, self.device)  # one line now, not a DALI error at the first batch
        self.with_indices, self.num_threads = with_indices, num_threads
        self._epoch = self._position = 0  # of the next batch to yield
        self._runner: _Runner | None = None

    def __len__(self) -> int:
        return len(self.plan)

    @property
    def epoch(self) -> int:
        return self._epoch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "position": self._position, "seed": self.plan.seed,
                "num_videos": len(self.plan.records), "world_size": self.plan.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        n = len(self.plan.records)
        if state.get("num_videos", n) != n:
            raise ValueError(f"loader state is for {state['num_videos']} videos, this set has {n}")
        self._epoch, self._position = int(state["epoch"]), int(state["position"])
        if self._runner is not None:
            self._runner.close()
        self._runner = None  # its prefetched batches belong to the old position

    def _feeder(self, epoch: int, pos: int) -> Callable[[], list[sampling.TrainSample]]:
        """The batches from (epoch, pos) on, one per call: the feed of one runner (its reader thread runs
        ahead of the yielded batches by the read-ahead and DALI's prefetch depth). The cursor is the
        runner's own, so a replaced runner's thread cannot move the next one's."""
        state = {"feed": (epoch, pos), "slots": (-1, [])}

        def next_feed() -> list[sampling.TrainSample]:
            epoch, pos = state["feed"]
            if state["slots"][0] != epoch:
                state["slots"] = (epoch, self.plan.epoch_samples(epoch))
            batch = self.plan.batch(epoch, pos, state["slots"][1])
            state["feed"] = (epoch, pos + 1) if pos + 1 < len(self) else (epoch + 1, 0)
            return batch

        return next_feed

    def _build(self) -> _Runner:
        p = self.plan

        def build(src):
            return dp.train_pipeline(src, kind=p.kind, device=dali_device(self.device), crop_size=p.spec.crop_size,
                                     short_side=resize_target(p.records, p.spec.short_side), ra_ops=p.spec.ra_ops,
                                     ra_translate=p.spec.ra_translate,
                                     batch_size=p.batch_size, num_threads=self.num_threads,
                                     **_pipe_device(self.device))

        return _Runner(build, self._feeder(self._epoch, self._position), lambda b: dp.pack_train(b, p.kind),
                       self.device)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._runner is None:
            self._runner = self._build()
        outs, batch = self._runner.run()
        result = dict(zip(self.plan.kind.outputs, outs))
        dev = outs[0].device
        result["label"] = to_loader_device(np.array([s.record.label for s in batch], np.int64), dev)
        if self.with_indices:
            result["primary_indices"] = to_loader_device(np.stack([s.primary_indices for s in batch]), dev)
            result["aux_indices"] = to_loader_device(np.stack([s.aux_indices for s in batch]), dev)
        self._position += 1
        if self._position >= len(self):
            self._epoch, self._position = self._epoch + 1, 0
        return result


class EvalSample:
    """One eval video: `indices` `(clips, T)` and crop positions `(crops, 2)` as (x, y) in [0, 1]."""

    def __init__(self, record: VideoRecord, indices: np.ndarray, crop_pos: np.ndarray):
        self.record, self.indices, self.crop_pos = record, indices, crop_pos


def eval_crop_positions(record: VideoRecord, crops: int) -> np.ndarray:
    """`(crops, 2)` (x, y): spread along the long side (left/center/right or top/center/bottom)."""
    along = np.linspace(0.0, 1.0, crops) if crops > 1 else np.array([0.5])
    center = np.full_like(along, 0.5)
    xy = (along, center) if record.width >= record.height else (center, along)
    return np.stack(xy, axis=1).astype(np.float32)


class EvalLoader:
    """One pass over a subset: dicts with `video` `(N, clips*crops, C, T, H, W)` (view = clip * crops + crop)."""

    def __init__(self, records: list[VideoRecord], *, batch_size: int, device: str | None, clips: int, crops: int,
                 crop_size: int, short_side: int, with_indices: bool, frames: int, stride: int, rank: int,
                 world_size: int, num_threads: int):
        if crop_size > short_side:
            raise ValueError(f"crop_size {crop_size} must not exceed short_side {short_side}")
        if clips < 1 or crops < 1 or batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError("need clips, crops, batch_size >= 1 and 0 <= rank < world_size")
        self.records = records[rank::world_size]  # disjoint and covering; no padding, so metrics stay exact
        self.batch_size, self.device = batch_size, resolve_device(device)
        check_gpu_decodable(self.records, self.device)
        self.clips, self.crops, self.crop_size, self.short_side = clips, crops, crop_size, short_side
        if frames < 1 or stride < 1:
            raise ValueError(f"eval clip must be (frames >= 1, stride >= 1), got {(frames, stride)}")
        self.frames, self.stride = frames, stride
        self.with_indices, self.num_threads = with_indices, num_threads

    def __len__(self) -> int:
        return -(-len(self.records) // self.batch_size)

    def samples(self) -> list[EvalSample]:
        return [EvalSample(r, sampling.eval_indices(r.num_frames, self.clips, self.frames, self.stride),
                           eval_crop_positions(r, self.crops)) for r in self.records]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        samples = self.samples()
        batches = iter([samples[i : i + self.batch_size] for i in range(0, len(samples), self.batch_size)])

        def build(src):
            return dp.eval_pipeline(src, device=dali_device(self.device), crop_size=self.crop_size,
                                    short_side=resize_target(self.records, self.short_side),
                                    crops=self.crops, batch_size=self.batch_size, num_threads=self.num_threads,
                                    **_pipe_device(self.device))

        runner = _Runner(build, lambda: next(batches), dp.pack_eval, self.device)
        try:
            for _ in range(len(self)):
                outs, batch = runner.run()
                # each output: (N, C, clips*T, H, W) -> (N, clips, crops, C, T, H, W) -> (N, V, C, T, H, W)
                n, c, _, h, w = outs[0].shape
                video = torch.stack(outs, dim=1).view(n, self.crops, c, self.clips, self.frames, h, w)
                video = video.permute(0, 3, 1, 2, 4, 5, 6).reshape(n, self.clips * self.crops, c, self.frames, h, w)
                result = {"video": video,
                          "label": to_loader_device(np.array([s.record.label for s in batch], np.int64), video.device)}
                if self.with_indices:
                    result["indices"] = to_loader_device(np.stack([s.indices for s in batch]), video.device)
                yield result
        finally:
            runner.close()
            del runner


def train_loader(root: str | Path, kind: sampling.Kind | str, *, split: str, batch_size: int,
                 spec: sampling.ClipSpec = sampling.ClipSpec(), device: str | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1, with_indices: bool = False, num_threads: int = 2,
                 drop_last: bool = True) -> TrainLoader:
    """The `kind` ("labeled" | "unlabeled", or a sampling.Kind) videos of `split`, infinite."""
    kind = sampling.KINDS[kind] if isinstance(kind, str) else kind
    labeled_set, unlabeled_set = read_split(root, split)
    return TrainLoader(labeled_set if kind is sampling.LABELED else unlabeled_set, kind=kind,
                       batch_size=batch_size, spec=spec, device=device, seed=seed, rank=rank,
                       world_size=world_size, with_indices=with_indices, num_threads=num_threads,
                       drop_last=drop_last)


def epoch_length(root: str | Path, kind: sampling.Kind | str, *, split: str, batch_size: int,
                 world_size: int = 1, drop_last: bool = True) -> int:
    """Batches per epoch per rank of `train_loader(root, kind, ...)`, without building a pipeline."""
    kind = sampling.KINDS[kind] if isinstance(kind, str) else kind
    labeled_set, unlabeled_set = read_split(root, split)
    records = labeled_set if kind is sampling.LABELED else unlabeled_set
    if not records:
        raise DatasetError(f"no {kind.name} videos in split {split!r} of {root}")
    return sampling.batches_per_epoch(len(records), world_size=world_size, batch_size=batch_size,
                                      drop_last=drop_last)


def unlabeled_loader(root: str | Path, **kwargs) -> TrainLoader:
    """Unlabeled videos of `split` (train.csv minus splits/{split}.txt), infinite.

    Yields `primary_weak`, `primary_strong` `(N, C, T_p, H, W)`, `aux_weak`, `aux_strong` `(N, C, T_a, H, W)`
    float32 normalized, `label` `(N,)` int64 (telemetry only); with_indices adds `primary_indices` `(N, T_p)`
    and `aux_indices` `(N, T_a)`. Keyword arguments as in `train_loader` (docs/ARCHITECTURE.md section 2).
    """
    return train_loader(root, sampling.UNLABELED, **kwargs)


def labeled_loader(root: str | Path, **kwargs) -> TrainLoader:
    """Labeled videos of `split`, infinite: `primary` `(N, C, T_p, H, W)`, `aux` `(N, C, T_a, H, W)`, `label`."""
    return train_loader(root, sampling.LABELED, **kwargs)


def eval_loader(root: str | Path, *, subset: str = "val", batch_size: int, device: str | None = None,
                clips: int = 10, crops: int = 3, crop_size: int = 256, short_side: int = 256,
                with_indices: bool = False, frames: int = 8, stride: int = 8, rank: int = 0, world_size: int = 1,
                num_threads: int = 2) -> EvalLoader:
    """One pass over `{subset}.csv`: `video` `(N, clips*crops, C, T, H, W)`, `label` `(N,)`; `indices` `(N, clips, T)`."""
    return EvalLoader(read_subset(root, subset), batch_size=batch_size, device=device, clips=clips, crops=crops,
                      crop_size=crop_size, short_side=short_side, with_indices=with_indices, frames=frames,
                      stride=stride, rank=rank, world_size=world_size, num_threads=num_threads)
