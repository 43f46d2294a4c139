"""Facts about the machine a benchmark ran on: CPU model and the flags that matter for INT8, cores, GPU, versions.

Benchmark numbers mean little without these, so every run writes them beside its rows
(`machine.json`). Nothing here imports torch or a GPU library: the GPU is found with `nvidia-smi`
(desktop) or `/etc/nv_tegra_release` and the device tree (Jetson, `sperm_edge.hardware`), and
versions are read from package metadata.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

from sperm_edge.hardware import jetson

log = logging.getLogger(__name__)

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
PACKAGES = (
    "sperm-edge",
    "numpy",
    "torch",
    "torchvision",
    "timm",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "grad-cam",
    "opencv-python-headless",
)


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


def memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def gpu_facts() -> list[dict]:
    """GPUs with name, driver and memory from nvidia-smi, or the Jetson's L4T release; empty without a GPU."""
    gpus: list[dict] = []
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
                gpus.append(
                    {
                        "name": parts[0],
                        "driver": parts[1],
                        "memory": parts[2],
                        "compute_capability": parts[3] if len(parts) > 3 else "",
                    }
                )
    board = jetson()
    if not gpus and board is not None:
        gpus.append(
            {
                "name": board["model"],
                "driver": f"L4T {board['l4t']} (JetPack {board['jetpack']})",
                "memory": "shared",
                "compute_capability": board["compute_capability"] or "",
            }
        )
    return gpus


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide the speed; absent packages are left out."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: on a shared machine they say how noisy the timings are."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_facts(threads: int) -> dict:
    """Everything `machine.json` records; `threads` is the intra-op thread count the benchmark used."""
    return {
        "cpu": cpu_facts(),
        "threads": threads,
        "memory_total_mb": memory_total_mb(),
        "os": f"{platform.system()} {platform.release()}",
        "gpus": gpu_facts(),
        "onnxruntime_providers": ort_providers(),
        "versions": package_versions(),
    }


def describe_machine(facts: dict) -> str:
    """One line for tables and reports: CPU, flags present, threads, GPU."""
    cpu = facts["cpu"]
    flags = [name for name, present in cpu.get("flags", {}).items() if present and name not in ("fma",)]
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in facts.get("gpus", [])) or "no GPU"
    threads = facts["threads"]
    return (
        f"{cpu['model']} ({cpu['family_model_stepping']}), flags: {' '.join(flags) or 'none'}; "
        f"{cpu['usable_cpus']} usable cores, {threads} thread{'' if threads == 1 else 's'} per engine; {gpus}"
    )
