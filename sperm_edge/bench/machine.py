"""Facts about the machine a benchmark ran on: CPU model and the flags that matter for INT8, cores, GPU, versions.

Benchmark numbers mean little without these, so every run writes them beside its rows
(`machine.json`). The processor and the GPU come from the one probe, `sperm_edge.hardware`;
versions are read from package metadata.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import platform
from pathlib import Path

from sperm_edge.hardware import cpu_facts, gpus

log = logging.getLogger(__name__)

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


def memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


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
        "gpus": gpus(),
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
