"""Inference engines behind one interface, chosen by name or automatically.

    with open_backend(bundle, "auto") as backend:
        outputs = backend.infer(batch)   # outputs.logits, .cam, .features (None for a model without them)

Names: `ort-cpu`, `ort-cuda`, `ort-trt` (ONNX Runtime and its execution providers), `trt` (a native
TensorRT engine from the bundle), `torch` (the retained checkpoint, the reference) and `auto`.
`auto` takes what is installed here and the latencies the bundle recorded at export for this
machine: the fastest measured (engine, precision) wins; INT8 only where it measured faster than
FP32 on the same engine; a GPU engine that was not measured still beats measured CPU figures;
without figures, the first available of trt, ort-trt, ort-cuda, ort-cpu, torch at FP32.
"""

from __future__ import annotations

import importlib.util
import logging

from sperm_edge.bundle import Bundle
from sperm_edge.engines.base import Backend, InputSpec, Outputs
from sperm_edge.engines.ort import OrtBackend, available_providers
from sperm_edge.engines.tensorrt import TensorRTBackend, rebuild_command
from sperm_edge.engines.torch_backend import TorchBackend
from sperm_edge.engines.triton import TritonBackend, is_triton
from sperm_edge.engines.tta import DihedralTTA
from sperm_edge.errors import SpermEdgeError
from sperm_edge.hardware import cpu_name

log = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "Backend",
    "DihedralTTA",
    "InputSpec",
    "OrtBackend",
    "Outputs",
    "TensorRTBackend",
    "TorchBackend",
    "TritonBackend",
    "auto_choice",
    "available_backends",
    "choose_auto",
    "open_backend",
]

BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "trt", "torch")
PREFERENCE = ("trt", "ort-trt", "ort-cuda", "ort-cpu", "torch")
GPU_BACKENDS = frozenset({"trt", "ort-trt", "ort-cuda"})


def availability(name: str, bundle: Bundle | None = None) -> tuple[bool, str]:
    """Whether engine `name` can run here (and for `bundle`); else why not and what to install."""
    if is_triton(name):
        return TritonBackend.available()
    if name.startswith("ort-"):
        return OrtBackend.available_for(name[4:])
    if name == "trt":
        ok, why = TensorRTBackend.available()
        if not ok or bundle is None:
            return ok, why
        engines = bundle.manifest.get("engines") or []
        if not engines:
            return False, f"bundle {bundle.path} has no TensorRT engine; build one here: {rebuild_command(bundle.path)}"
        fits, misfits = TensorRTBackend.matching(engines)
        if not fits:
            return False, f"{'; '.join(misfits)}; rebuild here: {rebuild_command(bundle.path)}"
        return True, ""
    if name == "torch":
        try:
            present = importlib.util.find_spec("torch") is not None  # cheap: does not import torch
        except ImportError:  # an import hook that refuses torch (a locked-down install, or a test emulating one)
            present = False
        return (True, "") if present else (False, "PyTorch is not installed; pip install torch timm")
    raise SpermEdgeError(
        f"unknown backend {name!r}; choose one of: auto, {', '.join(BACKENDS)}, triton://HOST:PORT/MODEL"
    )


def available_backends(bundle: Bundle | None = None) -> list[str]:
    """The engines that can run here, in order of preference."""
    return [name for name in PREFERENCE if availability(name, bundle)[0]]


def _figures(bundle: Bundle, here: str) -> dict[tuple[str, str], float]:
    """{(backend, precision): p50 ms} measured on this machine, at the batch measured most often."""
    rows = [b for b in bundle.manifest.get("benchmarks", []) if b.get("machine", {}).get("cpu", here) == here]
    if not rows:
        return {}
    batches = [int(b.get("batch", 1)) for b in rows]
    batch = max(set(batches), key=lambda n: (batches.count(n), -n))
    return {(b["backend"], b["precision"]): float(b["p50_ms"]) for b in rows if int(b.get("batch", 1)) == batch}


def choose_auto(bundle: Bundle, available: list[str] | None = None, here: str | None = None) -> tuple[str, str]:
    """The (backend, precision) `auto` runs; see the module docstring for the rule."""
    backend, precision, _reason = auto_choice(bundle, available, here)
    return backend, precision


def auto_choice(bundle: Bundle, available: list[str] | None = None, here: str | None = None) -> tuple[str, str, str]:
    """What `auto` runs and why: (backend, precision, reason)."""
    available = available_backends(bundle) if available is None else available
    if not available:
        raise SpermEdgeError("no inference engine is installed: pip install onnxruntime (or onnxruntime-gpu)")
    here = here or cpu_name()
    measured = {k: v for k, v in _figures(bundle, here).items() if k[0] in available}
    fair = {}
    for (backend, precision), ms in measured.items():
        if precision.startswith("int8"):
            fp32 = measured.get((backend, "fp32"))
            if fp32 is None or ms >= fp32:
                continue  # INT8 only where it measured faster than FP32
        fair[(backend, precision)] = ms
    if fair:
        best = min(fair, key=fair.get)
        unmeasured_gpu = [b for b in available if b in GPU_BACKENDS and not any(k[0] == b for k in measured)]
        if best[0] not in GPU_BACKENDS and unmeasured_gpu:
            return (
                unmeasured_gpu[0],
                "fp32",
                (
                    f"{unmeasured_gpu[0]} runs on the GPU here and was not measured at export; a GPU engine beats "
                    f"the CPU figures measured ({best[0]} {best[1]} {fair[best]:.2f} ms)"
                ),
            )
        figures = ", ".join(f"{b} {p} {ms:.2f} ms" for (b, p), ms in sorted(fair.items(), key=lambda kv: kv[1]))
        return best[0], best[1], f"fastest of the latencies the bundle measured on this processor ({figures})"
    why = "no latencies measured on this processor" if not measured else "no usable latencies measured here"
    return (
        available[0],
        "fp32",
        (f"{why}: the first available of {', '.join(PREFERENCE)} (available here: {', '.join(available)})"),
    )


def _pick_engine(bundle: Bundle, precision: str | None) -> dict:
    """The engine to run at `precision` (default: fp16, fp32, int8), among those built for this machine."""
    engines, misfits = TensorRTBackend.matching(bundle.manifest.get("engines", []))
    if not engines:
        raise SpermEdgeError(
            f"bundle {bundle.path} has no TensorRT engine for this machine ({'; '.join(misfits) or 'none at all'}); "
            f"build one here: {rebuild_command(bundle.path)}"
        )
    wanted = [precision] if precision else ["fp16", "fp32", "int8"]
    for p in wanted:
        for engine in engines:
            if engine.get("precision") == p:
                return engine
    have = ", ".join(sorted({str(e.get("precision")) for e in engines}))
    raise SpermEdgeError(
        f"bundle {bundle.path} has no {precision} TensorRT engine for this machine (it has: {have}); "
        f"build one here: {rebuild_command(bundle.path)}"
    )


def open_backend(
    bundle: Bundle,
    name: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    device: int = 0,
    spin: bool = False,
    tta: bool = False,
) -> Backend:
    """The backend `name` for `bundle` (not yet active: use it in a `with` block); `tta` wraps it in
    `DihedralTTA` (each crop classified in its 8 orientations).

    A missing engine fails here with what to install, not with an import traceback.
    """
    backend = _open(bundle, name, precision, threads, device, spin)
    return DihedralTTA(backend) if tta else backend


def _open(bundle: Bundle, name: str, precision: str | None, threads: int | None, device: int, spin: bool) -> Backend:
    if name == "auto":
        name, auto_precision, reason = auto_choice(bundle)
        precision = precision or auto_precision
        log.info("backend auto: %s %s (%s)", name, precision, reason)
    ok, why = availability(name, bundle)
    if not ok:
        raise SpermEdgeError(f"backend {name} is not available here: {why}")
    if is_triton(name):  # the server runs whichever of the bundle's models it was given
        return TritonBackend(name, bundle.card.classes, bundle.card.preprocess.img_size)
    if name.startswith("ort-"):
        precision = precision or "fp32"
        model = "fp32" if precision in ("fp16",) else precision
        if precision == "fp16" and name != "ort-trt":
            raise SpermEdgeError("fp16 runs through TensorRT: use --backend ort-trt or trt")
        return OrtBackend(bundle.onnx_path(model), name[4:], precision, threads, device, spin=spin)
    if name == "trt":
        engine = _pick_engine(bundle, precision)
        return TensorRTBackend(bundle.file(engine["file"]), engine.get("precision", "fp32"), engine, device)
    if precision not in (None, "fp32"):
        raise SpermEdgeError("the torch backend runs the checkpoint at fp32 only")
    return TorchBackend(bundle.checkpoint_stem(), threads=threads)


def provider_summary() -> str:
    """One line on what is installed, for error messages and `--help`."""
    providers = available_providers()
    return f"ONNX Runtime providers: {', '.join(providers) if providers else 'none'}"
