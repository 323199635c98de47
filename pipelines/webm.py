"""Cut a WebM (Matroska) video down to the packets that a sample's frames need.

Why: DALI's `fn.decoders.video`, fed a file's bytes through `external_source`, seeks to a keyframe only
when it holds a frame index, and for in-memory input it has none (DALI 2.4; `build_index=True/False` costs
the same, measured in bench/RESULTS.md, "Decode cost and position"). It therefore decodes every frame from
the first to the last one wanted (skipped frames are decoded but not converted to RGB), so a clip at frame
268 cost as much as decoding 268 frames.

`cut(data, frames)` returns a smaller, valid WebM that holds, for each GOP containing a wanted frame, only
the packets from that GOP's keyframe to its last wanted frame, and the position of each wanted frame in it.
The decoder then starts at a keyframe and decodes at most one GOP's worth of frames it does not return per
GOP it needs. The result is a standard Matroska stream (EBML header, Segment of unknown size, the file's
Info and Tracks, one Cluster per run of packets), re-timed so that its timestamps start at 0 and increase
by the file's own frame durations; codec data is copied byte for byte, so frames decode bit-identically.

Frame index = packet index: this holds for the files `preprocess/` writes (no B-frames, no alt-ref/hidden
frames: one SimpleBlock per shown frame, encode.py) and is what the loaders already assume when they ask
DALI for frame i. `cut` checks what it relies on and raises `NotCuttable` otherwise (several tracks,
laced or BlockGroup blocks, a first packet that is not a keyframe, timestamps that do not increase, a
packet count different from the caller's frame count): callers then feed the whole file as before.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

EBML, SEGMENT, INFO, TRACKS, CLUSTER = 0x1A45DFA3, 0x18538067, 0x1549A966, 0x1654AE6B, 0x1F43B675
TRACK_ENTRY, DURATION = 0xAE, 0x4489
TIMECODE, SIMPLEBLOCK, BLOCKGROUP = 0xE7, 0xA3, 0xA0
# Children of Segment (SeekHead, Info, Tracks, Cues, Cluster, Tags, Chapters, Attachments): one of these
# ends a Cluster of unknown size.
SEGMENT_CHILDREN = frozenset({0x114D9B74, INFO, TRACKS, 0x1C53BB6B, CLUSTER, 0x1254C367, 0x1043A770, 0x1941A469})
UNKNOWN_SIZE = -1
_SEGMENT_UNKNOWN = bytes.fromhex("18538067" "01ffffffffffffff")
_MAX_REL = 30000  # SimpleBlock timecodes are int16 relative to their cluster's: start a new cluster before


class NotCuttable(ValueError):
    """The file is not a WebM/Matroska layout that `cut` can trim safely; feed it whole."""


def _read_id(buf, pos: int) -> tuple[int, int]:
    b = buf[pos]
    n = 1 if b & 0x80 else 2 if b & 0x40 else 3 if b & 0x20 else 4 if b & 0x10 else 0
    if n == 0:
        raise NotCuttable(f"bad element id at byte {pos}")
    return int.from_bytes(buf[pos : pos + n], "big"), pos + n


def _read_size(buf, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b == 0:
        raise NotCuttable(f"bad element size at byte {pos}")
    n = 9 - b.bit_length()
    v = int.from_bytes(buf[pos : pos + n], "big") & ((1 << (7 * n)) - 1)
    return (UNKNOWN_SIZE if v == (1 << (7 * n)) - 1 else v), pos + n


@dataclass(frozen=True)
class Layout:
    """Where a WebM file keeps what `cut` copies: the EBML header, Info (and its Duration), Tracks, and each
    packet (SimpleBlock element) with its absolute timestamp and keyframe flag, in file order."""

    ebml: tuple[int, int]
    info: tuple[int, int]
    duration: tuple[int, int] | None  # byte range of Duration's float value inside the file
    tracks: tuple[int, int]
    starts: np.ndarray  # (N,) int64: first byte of each SimpleBlock element
    ends: np.ndarray  # (N,) int64: one past its last byte
    tc_at: np.ndarray  # (N,) int64: byte of its int16 relative timecode
    pts: np.ndarray  # (N,) int64: absolute timestamp (TimecodeScale units)
    key: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.starts)


def layout(data) -> Layout:
    """Parse `data` (bytes or a uint8 array of a whole .webm/.mkv file) into a `Layout`; NotCuttable if it
    is not a single-track Matroska file of unlaced SimpleBlocks."""
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    end_all = len(buf)
    try:
        eid, pos = _read_id(buf, 0)
        if eid != EBML:
            raise NotCuttable("not a Matroska/WebM file")
        size, pos = _read_size(buf, pos)
        ebml = (0, pos + size)
        eid, pos = _read_id(buf, ebml[1])
        if eid != SEGMENT:
            raise NotCuttable("no Segment after the EBML header")
        size, pos = _read_size(buf, pos)
        seg_end = end_all if size == UNKNOWN_SIZE else min(pos + size, end_all)
        info = tracks = duration = None
        starts, ends, tc_at, pts, key = [], [], [], [], []
        while pos < seg_end:
            el_start = pos
            eid, pos = _read_id(buf, pos)
            size, pos = _read_size(buf, pos)
            if eid == CLUSTER:
                pos = _cluster(buf, pos, size, seg_end, starts, ends, tc_at, pts, key)
                continue
            if size == UNKNOWN_SIZE:
                raise NotCuttable("element of unknown size outside a Cluster")
            if pos + size > end_all:
                raise NotCuttable("truncated file")
            if eid == INFO:
                info = (el_start, pos + size)
                duration = _child_value(buf, pos, pos + size, DURATION)
            elif eid == TRACKS:
                tracks = (el_start, pos + size)
                entries = 0
                p = pos
                while p < pos + size:
                    cid, p = _read_id(buf, p)
                    csize, p = _read_size(buf, p)
                    entries += cid == TRACK_ENTRY
                    p += csize
                if entries != 1:
                    raise NotCuttable(f"{entries} tracks (cut handles one)")
            pos += size
    except (IndexError, struct.error):
        raise NotCuttable("truncated file") from None
    if info is None or tracks is None or not starts:
        raise NotCuttable("no Info, Tracks or packets")
    return Layout(ebml, info, duration, tracks, *(np.array(a, np.int64) for a in (starts, ends, tc_at, pts)),
                  np.array(key, bool))


def _child_value(buf, start: int, end: int, wanted: int) -> tuple[int, int] | None:
    p = start
    while p < end:
        cid, p = _read_id(buf, p)
        csize, p = _read_size(buf, p)
        if cid == wanted:
            return (p, p + csize)
        p += csize
    return None


def _cluster(buf, pos: int, size: int, seg_end: int, starts, ends, tc_at, pts, key) -> int:
    """Parse one Cluster's children from `pos`; append its SimpleBlocks; return the position after it."""
    end = seg_end if size == UNKNOWN_SIZE else pos + size
    if end > len(buf):
        raise NotCuttable("truncated file")
    cluster_tc = None
    while pos < end:
        el_start = pos
        eid, p = _read_id(buf, pos)
        if size == UNKNOWN_SIZE and eid in SEGMENT_CHILDREN:
            return el_start  # the next Segment child ends a cluster of unknown size
        csize, p = _read_size(buf, p)
        if csize == UNKNOWN_SIZE or p + csize > end:
            raise NotCuttable("bad or truncated Cluster child")
        if eid == TIMECODE:
            cluster_tc = int.from_bytes(buf[p : p + csize], "big")
        elif eid == SIMPLEBLOCK:
            if cluster_tc is None:
                raise NotCuttable("SimpleBlock before its Cluster's Timecode")
            _, q = _read_size(buf, p)  # the track number (a size-style vint): the file has one track
            rel = struct.unpack_from(">h", buf, q)[0]
            flags = buf[q + 2]
            if flags & 0x06:
                raise NotCuttable("laced SimpleBlock")
            starts.append(el_start)
            ends.append(p + csize)
            tc_at.append(q)
            pts.append(cluster_tc + rel)
            key.append(bool(flags & 0x80))
        elif eid == BLOCKGROUP:
            raise NotCuttable("BlockGroup packets")
        pos = p + csize
    return end


def _size8(n: int) -> bytes:
    return (0x01 << 56 | n).to_bytes(8, "big")


def cut(data, frames: np.ndarray, lay: Layout | None = None, num_frames: int | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
    """(bytes of a WebM holding the GOP runs that `frames` need, as uint8, and each frame's position in it).

    `frames`: sorted unique frame indices (packet indices) of the file. `num_frames`: the frame count the
    caller decodes (train.csv); NotCuttable if the file's packet count differs from it.
    """
    lay = layout(data) if lay is None else lay
    n = len(lay)
    frames = np.asarray(frames, np.int64)
    if num_frames is not None and n != num_frames:
        raise NotCuttable(f"{n} packets, the manifest says {num_frames} frames")
    if len(frames) == 0 or frames[0] < 0 or frames[-1] >= n or np.any(np.diff(frames) <= 0):
        raise ValueError(f"frames must be sorted, unique and in [0, {n})")
    keys = np.flatnonzero(lay.key)
    if len(keys) == 0 or keys[0] != 0:
        raise NotCuttable("the first packet is not a keyframe")
    deltas = np.diff(lay.pts)
    if np.any(deltas <= 0):
        raise NotCuttable("timestamps do not increase")
    # Each wanted frame needs the packets from its GOP's keyframe up to it.
    first = keys[np.searchsorted(keys, frames, side="right") - 1]
    need = np.zeros(n + 1, np.int64)
    np.add.at(need, first, 1)
    np.add.at(need, frames + 1, -1)
    kept = np.flatnonzero(np.cumsum(need)[:n] > 0)
    positions = np.searchsorted(kept, frames)
    # Re-time: start at 0, and each packet keeps its own distance to the packet before it in the file.
    new_pts = np.concatenate([[0], np.cumsum(deltas[kept[1:] - 1])])
    run_start = np.concatenate([[True], np.diff(kept) > 1])

    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    info = bytearray(buf[lay.info[0] : lay.info[1]])
    if lay.duration is not None and lay.duration[1] - lay.duration[0] in (4, 8):  # the new, shorter Duration
        a, b = (x - lay.info[0] for x in lay.duration)
        fmt = ">d" if b - a == 8 else ">f"
        last_len = struct.unpack(fmt, info[a:b])[0] - float(lay.pts[-1] - lay.pts[0])  # the last frame's
        info[a:b] = struct.pack(fmt, float(new_pts[-1]) + max(last_len, 0.0))
    out = [bytes(buf[lay.ebml[0] : lay.ebml[1]]), _SEGMENT_UNKNOWN, bytes(info), bytes(buf[slice(*lay.tracks)])]
    cluster: list[bytes] = []
    cluster_tc = 0

    def close() -> None:
        if cluster:
            body = b"".join(cluster)
            out.extend((CLUSTER.to_bytes(4, "big"), _size8(len(body)), body))
            cluster.clear()

    for j, i in enumerate(kept.tolist()):
        t = int(new_pts[j])
        if run_start[j] or t - cluster_tc > _MAX_REL:
            close()
            cluster_tc = t
            cluster.append(bytes([TIMECODE, 0x88]) + t.to_bytes(8, "big"))
        s, e, at = int(lay.starts[i]), int(lay.ends[i]), int(lay.tc_at[i])
        cluster.append(bytes(buf[s:at]) + struct.pack(">h", t - cluster_tc) + bytes(buf[at + 2 : e]))
    close()
    return np.frombuffer(b"".join(out), np.uint8), positions.astype(np.int32)
