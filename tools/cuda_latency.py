"""PyTorch CUDA inference and Grad-CAM++ latency of one checkpoint, for machines with an NVIDIA GPU.

`sperm-edge bench` covers every backend of a bundle; this covers the retained PyTorch model on
the GPU: eager FP32 and FP16 autocast (channels_last) at a few batch sizes, and one Grad-CAM++
explanation (the runtime's `GradCamExplainer`) on real crops, CPU beside CUDA.

    python tools/cuda_latency.py RUN_OR_CHECKPOINT --data ../shared/data/hushem --out cuda.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sperm_edge.bench.harness import Timing
from sperm_edge.bench.stream import gradcam_latency
from sperm_edge.data.folder import load_image_folder
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_json
from sperm_edge.model.checkpoint import load_checkpoint, resolve_checkpoint
from sperm_edge.preprocess import preprocess_batch


@torch.inference_mode()
def model_latency(model: torch.nn.Module, batch: np.ndarray, fp16: bool, iters: int, warmup: int = 10) -> dict:
    """p50/p95/... ms of one forward pass on CUDA (synchronised), and images/s from the median."""
    inputs = torch.from_numpy(batch).cuda().contiguous(memory_format=torch.channels_last)
    timing = Timing(batch=len(batch))
    for step in range(warmup + iters):
        started = time.perf_counter()
        with torch.autocast("cuda", enabled=fp16):
            model(inputs)
        torch.cuda.synchronize()
        if step >= warmup:
            timing.samples_ms.append((time.perf_counter() - started) * 1000.0)
    return timing.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="Class folder of real crops.")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--cams", type=int, default=20, help="Grad-CAM++ explanations timed per device.")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        stem = resolve_checkpoint(args.checkpoint)
        ckpt = load_checkpoint(stem)
        images = load_image_folder(args.data, classes=ckpt.classes, min_classes=1).images
    except SpermEdgeError as err:
        raise SystemExit(f"cuda_latency: {err}") from None
    if not torch.cuda.is_available():
        raise SystemExit("cuda_latency: no CUDA device: this benchmark needs an NVIDIA GPU")
    model = ckpt.build_model().cuda().eval().to(memory_format=torch.channels_last)
    rows = []
    for size in (int(b) for b in args.batch.split(",")):
        batch = preprocess_batch([images[i % len(images)] for i in range(size)], ckpt.preprocess)
        for fp16 in (False, True):
            row = {"batch": size, "precision": "fp16-autocast" if fp16 else "fp32"}
            row.update(model_latency(model, batch, fp16, args.iters))
            rows.append(row)
            print(row, flush=True)
    crops = [images[i % len(images)] for i in range(args.cams)]
    cams = {device: gradcam_latency(stem, crops, threads=None, device=device) for device in ("cpu", "cuda")}
    print("grad-cam++", cams, flush=True)
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
