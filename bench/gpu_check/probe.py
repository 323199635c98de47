"""Step 0's probe of the GPU decoder, through ctypes only (no torch, no DALI): the driver (libcuda), NVDEC's
library (libnvcuvid, present in a container only with the `video` driver capability) and, per codec, what
cuvidGetDecoderCaps says the card decodes: supported or not, min and max coded size.

The struct and enum values are those of NVIDIA's Video Codec SDK header cuviddec.h (CUVIDDECODECAPS,
cudaVideoCodec, cudaVideoChromaFormat); the layout has been stable since SDK 8.1.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

# cudaVideoCodec values of the codecs a video dataset may hold (cuviddec.h).
CODECS = {"h264": 4, "hevc": 8, "vp8": 9, "vp9": 10, "av1": 11}
CHROMA_420 = 1  # cudaVideoChromaFormat_420: what preprocess writes (yuv420p), 8-bit


class DecodeCaps(ctypes.Structure):
    """CUVIDDECODECAPS: three inputs (codec, chroma format, bit depth - 8), then what the decoder supports."""

    _fields_ = [
        ("eCodecType", ctypes.c_int),
        ("eChromaFormat", ctypes.c_int),
        ("nBitDepthMinus8", ctypes.c_uint),
        ("reserved1", ctypes.c_uint * 3),
        ("bIsSupported", ctypes.c_ubyte),
        ("nNumNVDECs", ctypes.c_ubyte),
        ("nOutputFormatMask", ctypes.c_ushort),
        ("nMaxWidth", ctypes.c_uint),
        ("nMaxHeight", ctypes.c_uint),
        ("nMaxMBCount", ctypes.c_uint),
        ("nMinWidth", ctypes.c_ushort),
        ("nMinHeight", ctypes.c_ushort),
        ("reserved3", ctypes.c_uint * 11),
    ]


def _load(names: tuple[str, ...]) -> tuple[Any, str | None]:
    """The first of `names` that loads (ctypes.CDLL), and why none did."""
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name), None
        except OSError as e:
            errors.append(str(e).split(":")[-1].strip() or name)
    return None, f"{names[0]} not found ({errors[0] if errors else 'no such library'})"


def _fn(lib: Any, *names: str) -> Any:
    for n in names:
        f = getattr(lib, n, None)
        if f is not None:
            return f
    raise AttributeError(f"none of {names} in {lib}")


def driver_version() -> str | None:
    """The kernel driver's version (e.g. 580.65.06): /proc/driver/nvidia/version, else nvidia-smi."""
    proc = Path("/proc/driver/nvidia/version")
    try:
        for word in proc.read_text().split():
            if word.count(".") >= 1 and word.replace(".", "").isdigit():
                return word
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            q = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=20)
            if q.returncode == 0 and q.stdout.strip():
                return q.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None


def probe_nvdec() -> dict[str, Any]:
    """What the driver and NVDEC offer, every failure as a one-line reason (`cuda_why`, `nvdec_why`).

    Keys: capabilities (NVIDIA_DRIVER_CAPABILITIES or None), driver, cuda_driver (the CUDA version the
    driver supports, e.g. 13.0), gpu, cuda_why; nvcuvid (its path or None), nvdec_why; decoders:
    {codec: {supported, min: [w, h], max: [w, h], nvdecs}} or {codec: {error}}.
    """
    caps_env = os.environ.get("NVIDIA_DRIVER_CAPABILITIES")
    out: dict[str, Any] = {"capabilities": caps_env, "driver": driver_version(), "decoders": {}}
    cuda, why = _load(("libcuda.so.1", "libcuda.so"))
    if cuda is None:
        out["cuda_why"] = f"{why}: no NVIDIA driver visible in this machine/container"
        out["nvdec_why"] = out["cuda_why"]
        return out
    rc = cuda.cuInit(0)
    if rc != 0:
        out["cuda_why"] = f"cuInit failed with CUresult {rc} (no usable GPU)"
        out["nvdec_why"] = out["cuda_why"]
        return out
    version = ctypes.c_int()
    cuda.cuDriverGetVersion(ctypes.byref(version))
    out["cuda_driver"] = f"{version.value // 1000}.{version.value % 1000 // 10}"
    count, dev = ctypes.c_int(), ctypes.c_int()
    cuda.cuDeviceGetCount(ctypes.byref(count))
    if count.value < 1 or cuda.cuDeviceGet(ctypes.byref(dev), 0) != 0:
        out["cuda_why"] = "the driver sees no GPU"
        out["nvdec_why"] = out["cuda_why"]
        return out
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, dev)
    out["gpu"] = name.value.decode(errors="replace")

    nvcuvid, why = _load(("libnvcuvid.so.1", "libnvcuvid.so"))
    if nvcuvid is None:
        has_video = caps_env is not None and any(c in ("video", "all") for c in caps_env.split(","))
        hint = ("" if has_video else
                f"; NVIDIA_DRIVER_CAPABILITIES={caps_env or '(unset: compute,utility)'} lacks 'video', which a "
                "container needs for NVDEC")
        out["nvdec_why"] = f"{why}{hint}: DALI's GPU decoder cannot run, only the CPU backend"
        return out
    out["nvcuvid"] = getattr(nvcuvid, "_name", "libnvcuvid.so.1")
    ctx = ctypes.c_void_p()
    retain = _fn(cuda, "cuDevicePrimaryCtxRetain")
    if retain(ctypes.byref(ctx), dev) != 0:
        out["nvdec_why"] = "cuDevicePrimaryCtxRetain failed: no CUDA context for cuvidGetDecoderCaps"
        return out
    _fn(cuda, "cuCtxPushCurrent_v2", "cuCtxPushCurrent")(ctx)
    try:
        get_caps = nvcuvid.cuvidGetDecoderCaps
        for codec, value in CODECS.items():
            caps = DecodeCaps(eCodecType=value, eChromaFormat=CHROMA_420, nBitDepthMinus8=0)
            rc = get_caps(ctypes.byref(caps))
            if rc != 0:
                out["decoders"][codec] = {"error": f"cuvidGetDecoderCaps returned CUresult {rc}"}
                continue
            out["decoders"][codec] = {"supported": bool(caps.bIsSupported), "nvdecs": caps.nNumNVDECs,
                                      "min": [caps.nMinWidth, caps.nMinHeight],
                                      "max": [caps.nMaxWidth, caps.nMaxHeight]}
    finally:
        _fn(cuda, "cuCtxPopCurrent_v2", "cuCtxPopCurrent")(ctypes.byref(ctypes.c_void_p()))
        _fn(cuda, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease")(dev)
    if not any(d.get("supported") for d in out["decoders"].values()):
        out["nvdec_why"] = "cuvidGetDecoderCaps reports no supported 8-bit 4:2:0 codec"
    return out


def decoder_line(dec: dict[str, Any]) -> str:
    """"h264 48x16..4096x4096 (x7), vp9 128x128..8192x8192, av1 no" from probe_nvdec()['decoders']."""
    parts = []
    for codec, d in dec.items():
        if "error" in d:
            parts.append(f"{codec} ? ({d['error']})")
        elif not d["supported"]:
            parts.append(f"{codec} no")
        else:
            parts.append(f"{codec} {d['min'][0]}x{d['min'][1]}..{d['max'][0]}x{d['max'][1]}"
                         + (f" (x{d['nvdecs']})" if d.get("nvdecs") else ""))
    return ", ".join(parts)


def codec_ok(facts: dict[str, Any], codec: str, size: tuple[int, int] | None = None) -> str | None:
    """None if the GPU decoder can decode `codec` at `size` = (width, height) per step 0's probe, else why
    (one line). Without a probe (the step skipped) the GPU rows are attempted."""
    probe = facts.get("probe")
    if probe is None:
        return None
    if probe.get("nvdec_why") and not probe.get("decoders"):
        return probe["nvdec_why"]
    d = probe.get("decoders", {}).get(codec)
    if d is None or "error" in d:
        return None if d is None else f"{codec}: {d['error']}"
    if not d["supported"]:
        return f"this GPU's NVDEC does not decode {codec} (cuvidGetDecoderCaps)"
    if size is not None:
        (w, h), (min_w, min_h) = size, d["min"]
        if w < min_w or h < min_h:
            return f"{w}x{h} is below NVDEC's minimum {min_w}x{min_h} for {codec}"
    return None
