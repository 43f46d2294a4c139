"""What this machine offers an engine: processor, Jetson model, L4T/JetPack release, CUDA, cuDNN, TensorRT, GPU,
cameras. The one probe: export, the runtime, `doctor` and the benchmarks all ask here.

Read from the files the system keeps (`/etc/nv_tegra_release`, the device tree, CUDA's
`version.json`, cuDNN's header, the libraries' file names, `/dev/video*`) below a `root` path,
so tests lay out a fake root instead of patching this code; and from the CUDA driver library
itself for the GPU. Nothing here imports torch, TensorRT or onnxruntime.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/")
# CPU flags that decide how fast INT8 and FP32 kernels can be (x86 /proc/cpuinfo names).
INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
_LIB_DIRS = ("usr/lib/aarch64-linux-gnu", "usr/lib/x86_64-linux-gnu", "usr/local/cuda/lib64", "usr/lib64", "usr/lib")

# L4T (Jetson Linux) release -> JetPack, from NVIDIA's JetPack release notes; the newest first.
_JETPACK = (
    ("36.4.4", "6.2.1"),
    ("36.4.3", "6.2"),
    ("36.4", "6.1"),
    ("36.3", "6.0"),
    ("36.2", "6.0 DP"),
    ("35.6", "5.1.4"),
    ("35.5", "5.1.3"),
    ("35.4", "5.1.2"),
    ("35.3", "5.1.1"),
    ("35.2", "5.1"),
    ("35.1", "5.0.2"),
)
# Jetson SoC (device-tree `compatible`) -> GPU compute capability
_SOC_SM = {"tegra234": "8.7", "tegra194": "7.2", "tegra186": "6.2", "tegra210": "5.3"}


def _read(root: Path, relative: str) -> str | None:
    try:
        return (root / relative).read_text(errors="replace")
    except OSError:
        return None


def _device_tree(root: Path, name: str) -> str | None:
    for base in ("proc/device-tree", "sys/firmware/devicetree/base"):
        text = _read(root, f"{base}/{name}")
        if text is not None:
            return text
    return None


def jetpack_for(l4t: str) -> str | None:
    """The JetPack release of an L4T release ("36.4.0" -> "6.1"), None when unknown."""
    for prefix, jetpack in _JETPACK:
        if l4t == prefix or l4t.startswith(prefix + "."):
            return jetpack
    return None


def jetson(root: Path = ROOT) -> dict | None:
    """{model, soc, l4t, jetpack, compute_capability} of a Jetson; None on any other machine."""
    release = _read(root, "etc/nv_tegra_release")
    if release is None:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
    l4t = f"{match.group(1)}.{match.group(2)}" if match else None
    model = (_device_tree(root, "model") or "NVIDIA Jetson").strip("\x00\n ")
    compatible = (_device_tree(root, "compatible") or "").split("\x00")
    soc = next((c.split(",", 1)[1] for c in compatible if c.startswith("nvidia,tegra")), None)
    return {
        "model": model,
        "soc": soc,
        "l4t": l4t,
        "jetpack": jetpack_for(l4t) if l4t else None,
        "compute_capability": _SOC_SM.get(soc or ""),
    }


def _library_version(root: Path, stem: str) -> str | None:
    """The fullest version in a library's file names, e.g. libnvinfer.so.10.3.0 -> "10.3.0"."""
    best: tuple[int, ...] = ()
    for folder in _LIB_DIRS:
        for path in (root / folder).glob(f"{stem}.so.*") if (root / folder).is_dir() else ():
            parts = path.name[len(stem) + 4 :].split(".")
            if all(p.isdigit() for p in parts) and len(parts) > len(best):
                best = tuple(int(p) for p in parts)
    return ".".join(map(str, best)) or None


def tensorrt_library_version(root: Path = ROOT) -> str | None:
    return _library_version(root, "libnvinfer")


def cuda_version(root: Path = ROOT) -> str | None:
    """The CUDA toolkit's version from /usr/local/cuda (version.json since CUDA 11, version.txt before)."""
    text = _read(root, "usr/local/cuda/version.json")
    if text:
        try:
            return json.loads(text)["cuda"]["version"]
        except (ValueError, KeyError, TypeError):
            pass
    text = _read(root, "usr/local/cuda/version.txt") or ""
    match = re.search(r"CUDA Version\s+([\d.]+)", text)
    return match.group(1) if match else _library_version(root, "libcudart")


def cudnn_version(root: Path = ROOT) -> str | None:
    """cuDNN's version from its header (cudnn_version.h), else from the library's file name."""
    for folder in (
        "usr/include",
        "usr/include/aarch64-linux-gnu",
        "usr/include/x86_64-linux-gnu",
        "usr/local/cuda/include",
    ):
        text = _read(root, f"{folder}/cudnn_version.h")
        if text:
            parts = [re.search(rf"#define CUDNN_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCHLEVEL")]
            if all(parts):
                return ".".join(p.group(1) for p in parts)
    return _library_version(root, "libcudnn")


def gstreamer_plugin(root: Path, name: str) -> bool:
    """Whether a GStreamer plugin library (e.g. nvarguscamerasrc) is installed."""
    return any((root / folder / "gstreamer-1.0" / f"libgst{name}.so").is_file() for folder in _LIB_DIRS)


def cameras(root: Path = ROOT) -> list[dict]:
    """The V4L2 devices present: [{device, name}] (the name the driver gives, when it gives one)."""
    found = []
    for path in sorted((root / "dev").glob("video*"), key=lambda p: (len(p.name), p.name)):
        if not path.name[5:].isdigit():
            continue
        name = _read(root, f"sys/class/video4linux/{path.name}/name")
        found.append({"device": f"/dev/{path.name}", "name": name.strip() if name else None})
    return found


def cuda_driver_gpu() -> tuple[str, str] | None:
    """(name, "major.minor") of GPU 0 from the CUDA driver library, or None without one."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return None
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    if cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device) != 0:
        return None
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)
    cuda.cuDeviceGetName(name, len(name), device)
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as {key: value}; empty where there is none (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    facts: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if facts:
                break
            continue
        key, _, value = line.partition(":")
        facts.setdefault(key.strip(), value.strip())
    return facts


def cpu_facts() -> dict:
    """Model name, vendor/family/model numbers, the INT8-relevant flags, logical and usable cores."""
    info = _cpuinfo()
    flags = set(info.get("flags", info.get("Features", "")).split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return {
        "model": info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id", ""),
        "family_model_stepping": "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")),
        "architecture": platform.machine(),
        "flags": {flag: flag in flags for flag in INTERESTING_FLAGS} if flags else {},
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
    }


def cpu_name() -> str:
    """The processor's model name: export records it beside each latency, and `--backend auto` trusts only
    figures measured on a processor of the same name."""
    return cpu_facts()["model"]


def gpus() -> list[dict]:
    """GPUs with name, driver and memory from nvidia-smi, the Jetson's L4T release, or the CUDA driver library;
    empty without a GPU. Every question about the GPU (benchmarks, `bench`'s GPU rows) asks this."""
    found: list[dict] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError) as err:
            log.warning("nvidia-smi failed: %s", err)
            out = ""
        for line in out.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 3:
                found.append(
                    {
                        "name": parts[0],
                        "driver": parts[1],
                        "memory": parts[2],
                        "compute_capability": parts[3] if len(parts) > 3 else "",
                    }
                )
    board = jetson()
    if not found and board is not None:
        found.append(
            {
                "name": board["model"],
                "driver": f"L4T {board['l4t']} (JetPack {board['jetpack']})",
                "memory": "shared",
                "compute_capability": board["compute_capability"] or "",
            }
        )
    driver = cuda_driver_gpu() if not found else None
    if driver is not None:
        found.append({"name": driver[0], "driver": "CUDA driver", "memory": "", "compute_capability": driver[1]})
    return found
