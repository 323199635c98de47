"""The project's one device vocabulary and its one resolver: "auto" | "cuda" | "cpu" (torch's names).

Used for the training device (cmpl.runtime) and for where the loaders decode; DALI's own names ("gpu",
"mixed") appear only inside pipelines/dali_pipelines.py.
"""
from __future__ import annotations

DEVICES = ("auto", "cuda", "cpu")


def resolve_device(name: str | None) -> str:
    """"auto" (or None) -> "cuda" when CUDA is available, else "cpu"; "cuda" | "cpu" as given, checked."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but CUDA is not available; use 'cpu'")
    return name


def dali_device(device: str) -> str:
    """A resolved device -> DALI's operator device for the pipeline graph ("gpu" | "cpu")."""
    return "gpu" if device == "cuda" else "cpu"


# ---- the GPU decoder's limits ------------------------------------------------------------------------
# NVDEC's smallest coded frame (width, height) per codec, from NVIDIA's Video Codec SDK decoder support
# matrix (the same on Turing through Hopper). DALI's GPU decoder ('mixed') fails below it ("Video is too
# small in at least one dimension"); `python -m bench.gpu_check` step 0 reads the card's own values
# (cuvidGetDecoderCaps). H100's NVDEC has no AV1; the CPU backend decodes VP8/VP9/MJPEG only.
NVDEC_MIN_SIZE = {"h264": (48, 16), "hevc": (144, 144), "vp8": (48, 16), "vp9": (128, 128), "av1": (128, 128)}
# The codec a dataset folder's videos hold when its meta.json names none: what preprocess writes per container.
CONTAINER_CODEC = {".webm": "vp9", ".mp4": "h264"}


def dataset_codec(root, suffix: str) -> str | None:
    """The codec of a dataset folder's videos: meta.json's "codec" (preprocess writes it), else the
    container's usual one (`suffix`: ".webm" | ".mp4"), else None."""
    import json
    from pathlib import Path

    try:
        codec = json.loads((Path(root) / "meta.json").read_text()).get("codec")
    except (OSError, ValueError, AttributeError):
        codec = None
    return str(codec).lower() if codec else CONTAINER_CODEC.get(suffix.lower())


def check_gpu_decodable(records, device: str) -> None:
    """Before the first batch: on the GPU, every video of `records` (pipelines.dataset.VideoRecord, sizes
    from train.csv/val.csv) must be at least NVDEC's minimum for its codec. Raises DatasetError, one line
    naming the first video below it and the manifest it comes from; a no-op on the CPU."""
    from pathlib import Path

    from pipelines.dataset import DatasetError

    if device != "cuda" or not records:
        return
    first = records[0]
    root = Path(first.path).parents[len(Path(first.rel).parts) - 1]  # path = root / rel
    codec = dataset_codec(root, Path(first.rel).suffix)
    if codec not in NVDEC_MIN_SIZE:
        return  # unknown codec: DALI's own error (loaders._decode_error) names the file
    min_w, min_h = NVDEC_MIN_SIZE[codec]
    small = [r for r in records if r.width < min_w or r.height < min_h]
    if small:
        r = small[0]
        raise DatasetError(
            f"{r.path}: {r.width}x{r.height} (its width,height in {root}'s train.csv/val.csv) is below the GPU "
            f"decoder's minimum {min_w}x{min_h} for {codec} ({len(small)} of {len(records)} videos); "
            f"re-encode at a larger --short-side (preprocess.synthetic's default 144 is enough) or decode on the "
            f"CPU (--data.device=cpu)")
