"""`sperm-edge doctor`: what this machine can run, what `--backend auto` would pick and why, and how to fix the rest.

One JSON-ready dict: Python and platform (a Jetson's model and L4T/JetPack release), CUDA, cuDNN,
TensorRT, ONNX Runtime and its providers, the GPU, cameras (V4L2 devices; GStreamer and
`nvarguscamerasrc` for `csi://`), every backend's availability, and with a bundle: its engines
(each matched against this machine's TensorRT and GPU) and the `auto` choice. Every missing
piece comes with the command that fixes it. The backend logic is the runtime's own
(`availability`, `auto_choice`, `engine_mismatch`), not a second copy.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path

from sperm_edge import hardware
from sperm_edge.engines import BACKENDS, auto_choice, availability
from sperm_edge.engines.tensorrt import engine_mismatch, rebuild_command
from sperm_edge.errors import SpermEdgeError

RUNTIME_INSTALL = 'pip install "sperm-edge[runtime]"'


def _onnxruntime() -> dict:
    try:
        import onnxruntime
    except ImportError:
        return {"version": None, "providers": []}
    return {"version": onnxruntime.__version__, "providers": list(onnxruntime.get_available_providers())}


def _tensorrt(root: Path) -> dict | None:
    """TensorRT's version from its Python module, else from the library; None when neither is here."""
    python = importlib.util.find_spec("tensorrt") is not None
    version = None
    if python:
        try:
            import tensorrt

            version = tensorrt.__version__
        except Exception:  # a broken install: report the library's version below
            python = False
    version = version or hardware.tensorrt_library_version(root)
    return {"version": version, "python": python} if version else None


def _sdk_cameras() -> list[dict]:
    """The cameras the installed camera SDKs (pylon, Micro-Manager) see, as doctor lists cameras."""
    from sperm_edge.runtime.sources.sdk import list_cameras

    return [{**c, "device": c["uri"], "name": " ".join(str(v) for v in (c["model"], c["serial"]) if v)}
            for c in list_cameras()]  # fmt: skip


def _opencv_gstreamer() -> bool:
    import cv2

    return any("GStreamer" in line and "YES" in line for line in cv2.getBuildInformation().splitlines())


def machine_report(root: Path = hardware.ROOT) -> dict:
    """Everything about this machine that decides what the runtime can use (files read below `root`)."""
    board = hardware.jetson(root)
    gpu = hardware.cuda_driver_gpu()
    cuda = hardware.cuda_version(root)
    gpus = [{"name": gpu[0], "compute_capability": gpu[1]}] if gpu else []
    if not gpus and board is not None:
        gpus = [{"name": board["model"], "compute_capability": board["compute_capability"]}]
    return {
        "python": platform.python_version(),
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "release": platform.release(),
            "jetson": board,
        },
        "onnxruntime": _onnxruntime(),
        "tensorrt": _tensorrt(root),
        "cuda": {"version": cuda, "cudnn": hardware.cudnn_version(root)} if cuda else None,
        "gpus": gpus,
        "cameras": [{"sdk": "v4l2", **camera} for camera in hardware.cameras(root)] + _sdk_cameras(),
        "csi": {
            "opencv_gstreamer": _opencv_gstreamer(),
            "nvarguscamerasrc": hardware.gstreamer_plugin(root, "nvarguscamerasrc"),
        },
        "backends": {name: dict(zip(("available", "reason"), availability(name), strict=True)) for name in BACKENDS},
    }


def bundle_report(bundle, machine: dict) -> dict:
    """A bundle's engines against this machine, and what `auto` runs for it and why."""
    trt = machine["tensorrt"]
    here_sm = machine["gpus"][0]["compute_capability"] if machine["gpus"] else None
    engines = []
    for engine in bundle.manifest.get("engines", []):
        if trt is None:
            reason = "TensorRT is not installed here"
        else:
            reason = engine_mismatch(engine, trt["version"], here_sm)
        engines.append(
            {
                "file": engine.get("file"),
                "precision": engine.get("precision"),
                "tensorrt": engine.get("tensorrt"),
                "compute_capability": engine.get("compute_capability"),
                "matches": reason is None,
                "reason": reason or "",
            }
        )
    report = {"path": str(bundle.path), "classes": bundle.card.classes, "engines": engines}
    try:
        backend, precision, reason = auto_choice(bundle)
    except SpermEdgeError as err:
        return {**report, "auto_backend": None, "auto_precision": None, "auto_reason": str(err), "can_run": False}
    ok, why = availability(backend, bundle)
    return {
        **report,
        "auto_backend": backend,
        "auto_precision": precision,
        "auto_reason": reason if ok else f"{reason}; but {why}",
        "can_run": ok,
    }


def fixes(report: dict) -> list[dict]:
    """For each missing piece: what is missing and the command that fixes it."""
    out: list[dict] = []

    def add(missing: str, fix: str) -> None:
        out.append({"missing": missing, "fix": fix})

    jetson = report["platform"]["jetson"]
    ort = report["onnxruntime"]
    if ort["version"] is None:
        add("ONNX Runtime (the default engine)", RUNTIME_INSTALL)
    gpu = bool(report["gpus"])
    if gpu and not any(p in ort["providers"] for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")):
        fix = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
        if jetson:  # PyPI's onnxruntime-gpu is built for desktop GPUs
            fix = "pip uninstall -y onnxruntime, then NVIDIA's onnxruntime-gpu wheel for JetPack 6 (docs/jetson.md)"
        add("ONNX Runtime's GPU providers (ort-cuda, ort-trt)", fix)
    trt = report["tensorrt"]
    if gpu and (trt is None or not trt["python"]):
        fix = "sudo apt install python3-libnvinfer (ships with JetPack)" if jetson else "pip install tensorrt"
        add("TensorRT's Python module (the trt backend)", fix)
    if gpu and trt and trt["python"] and importlib.util.find_spec("cuda") is None:
        cuda = (report["cuda"] or {}).get("version") or "12"
        major = cuda.split(".")[0]
        add("cuda-python (CUDA runtime bindings for the trt backend)", f'pip install "cuda-python=={major}.*"')
    if not [c for c in report["cameras"] if not c.get("demo")] and not report["csi"]["nvarguscamerasrc"]:
        add("a camera (/dev/video*)", "connect a USB camera; in a container: docker run --device /dev/video0 ...")
    if jetson and report["csi"]["nvarguscamerasrc"] and not report["csi"]["opencv_gstreamer"]:
        add(
            "OpenCV with GStreamer (csi:// cameras)",
            "pip uninstall -y opencv-python-headless  # JetPack's python3-opencv has GStreamer",
        )
    bundle = report.get("bundle")
    if bundle:
        stale = [e for e in bundle["engines"] if not e["matches"]]
        if gpu and trt and (stale or not bundle["engines"]):
            add("a TensorRT engine built on this machine", rebuild_command(bundle["path"]))
        if not bundle["can_run"]:
            add("an inference engine that runs this bundle", RUNTIME_INSTALL)
    return out


def diagnose(bundle_path: str | Path | None = None, root: Path = hardware.ROOT) -> dict:
    """The doctor's report; `ok` is True when the bundle (or, without one, any backend) can run here."""
    report = machine_report(root)
    if bundle_path is not None:
        from sperm_edge.bundle import load_bundle

        report["bundle"] = bundle_report(load_bundle(bundle_path), report)
        ok = report["bundle"]["can_run"]
    else:
        ok = any(b["available"] for b in report["backends"].values())
    report["fixes"] = fixes(report)
    report["ok"] = ok
    report["executable"] = sys.executable
    return report
