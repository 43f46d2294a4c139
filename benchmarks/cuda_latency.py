"""PyTorch CUDA inference and Grad-CAM++ latency of one checkpoint, for machines with an NVIDIA GPU.

`sperm-edge bench` covers every backend of a bundle; this covers the retained PyTorch model on
the GPU: eager FP32 and FP16 autocast (channels_last) at a few batch sizes, and one Grad-CAM++
explanation (the runtime's `GradCamExplainer`) on real crops, CPU beside CUDA.

    python benchmarks/cuda_latency.py RUN_OR_CHECKPOINT --data ../shared/data/hushem --out cuda.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sperm_edge.data.folder import load_image_folder
from sperm_edge.explain.gradcam import GradCamExplainer
from sperm_edge.io import atomic_write_json
from sperm_edge.model.checkpoint import load_checkpoint, resolve_checkpoint
from sperm_edge.preprocess import preprocess_batch


def percentiles(samples: list[float]) -> dict:
    ms = np.array(samples) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "n": len(samples)}


def time_calls(call, iters: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(iters):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


@torch.inference_mode()
def model_latency(model: torch.nn.Module, batch: np.ndarray, fp16: bool, iters: int) -> dict:
    inputs = torch.from_numpy(batch).cuda().contiguous(memory_format=torch.channels_last)

    def call() -> None:
        with torch.autocast("cuda", enabled=fp16):
            model(inputs)
        torch.cuda.synchronize()

    result = percentiles(time_calls(call, iters))
    result["images_per_s"] = len(batch) / (result["p50_ms"] / 1000.0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="Class folder of real crops.")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--cams", type=int, default=20, help="Grad-CAM++ explanations timed per device.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs an NVIDIA GPU")

    stem = resolve_checkpoint(args.checkpoint)
    ckpt = load_checkpoint(stem)
    images = load_image_folder(args.data, classes=ckpt.classes, min_classes=1).images
    model = ckpt.build_model().cuda().eval().to(memory_format=torch.channels_last)
    rows = []
    for size in (int(b) for b in args.batch.split(",")):
        batch = preprocess_batch([images[i % len(images)] for i in range(size)], ckpt.preprocess)
        for fp16 in (False, True):
            row = {"batch": size, "precision": "fp16-autocast" if fp16 else "fp32"}
            row.update(model_latency(model, batch, fp16, args.iters))
            rows.append(row)
            print(row, flush=True)
    cams = {}
    for device in ("cpu", "cuda"):
        with GradCamExplainer(stem, threads=None, device=device) as explainer:
            crops = iter(images * (args.cams // len(images) + 2))
            cams[device] = percentiles(time_calls(lambda e=explainer, c=crops: e.explain(next(c)), args.cams, warmup=3))
        print("grad-cam++", device, cams[device], flush=True)
    facts = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "checkpoint": str(stem),
        "input": ckpt.preprocess.img_size,
        "model": rows,
        "gradcam_plusplus": cams,
    }
    atomic_write_json(args.out, facts)
    print(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
