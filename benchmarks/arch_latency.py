"""Batch-1 CPU latency of architectures side by side: PyTorch eager (NCHW), no bundle needed.

`sperm-edge bench` times the engines of one exported bundle; choosing between architectures
(CBAM-Lite0 against Lite1/Lite2 at their native sizes) needs them in one run instead, before any
of them is trained. Each architecture is built with its ImageNet backbone and an untrained
4-class head (latency does not depend on the weights), and timed by the benchmark harness: warm-up,
then rounds that alternate the models, so drift hits all alike. Every model is fed a crop of one
shared input at its own size.

    python benchmarks/arch_latency.py

writes benchmarks/results/arch_latency.json (rows, load average before and after, machine).
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from sperm_edge.bench.harness import TimingConfig, time_runners
from sperm_edge.bench.machine import load_average, machine_facts
from sperm_edge.engines.base import Outputs
from sperm_edge.errors import SpermEdgeError
from sperm_edge.io import atomic_write_json
from sperm_edge.model import create_model

log = logging.getLogger("arch_latency")

DEFAULT_CONFIGS = (
    "cbam_efficientnet_lite0@224",
    "cbam_efficientnet_lite1@224",
    "cbam_efficientnet_lite1@240",
    "cbam_efficientnet_lite2@260",
)
NUM_CLASSES = 4  # HuSHeM's


class EagerArch:
    """One architecture in eager NCHW under `torch.inference_mode`, fed the top-left `img_size` crop of a batch."""

    def __init__(self, arch: str, img_size: int) -> None:
        self.arch, self.img_size = arch, img_size
        self.model: torch.nn.Module | None = None

    def __enter__(self) -> EagerArch:
        self.model = create_model(self.arch, NUM_CLASSES, pretrained=True).eval()
        return self

    def __exit__(self, *exc: object) -> None:
        self.model = None

    def infer(self, batch: np.ndarray) -> Outputs:
        x = torch.from_numpy(np.ascontiguousarray(batch[..., : self.img_size, : self.img_size]))
        with torch.inference_mode():
            return Outputs(self.model(x).numpy())

    def parameters_m(self) -> float:
        return round(sum(p.numel() for p in self.model.parameters()) / 1e6, 2)


def parse_config(text: str) -> tuple[str, int]:
    arch, _, size = text.partition("@")
    if not size.isdigit() or int(size) < 32:
        raise SpermEdgeError(f"--configs {text!r}: expected ARCH@PIXELS, e.g. cbam_efficientnet_lite1@240")
    return arch, int(size)


def measure(configs: list[tuple[str, int]], threads: int, timing: TimingConfig) -> list[dict]:
    """One row per (architecture, size): batch-1 latency figures, parameters, ratio to the first row's p50."""
    torch.set_num_threads(threads)
    runners = {f"{arch}@{size}": EagerArch(arch, size) for arch, size in configs}
    largest = max(size for _, size in configs)
    with ExitStack() as stack:
        for runner in runners.values():
            stack.enter_context(runner)
        timings, failed = time_runners(runners, (3, largest, largest), timing)
        params = {key: runner.parameters_m() for key, runner in runners.items()}
    if failed:
        raise SpermEdgeError(f"timing failed: {failed}")
    rows = [
        {"arch": arch, "img_size": size, "params_m": params[f"{arch}@{size}"], **timings[f"{arch}@{size}", 1].summary()}
        for arch, size in configs
    ]
    for row in rows:
        row["p50_vs_first"] = round(row["p50_ms"] / rows[0]["p50_ms"], 2)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| arch | px | params (M) | p50 ms | p95 ms | images/s | p50 vs first |", "| --- |" + " ---: |" * 6]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['img_size']} | {r['params_m']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {r['images_per_s']:.1f} | {r['p50_vs_first']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), metavar="ARCH@PIXELS")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    parser.add_argument("--iters", type=int, default=50, help="Timed calls per model (spread over the rounds).")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "arch_latency.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        configs = [parse_config(c) for c in args.configs]
        before = load_average()
        rows = measure(configs, args.threads, TimingConfig((1,), args.iters, args.warmup, args.rounds))
    except SpermEdgeError as err:
        sys.exit(f"error: {err}")
    report = {
        "command": " ".join(["python", *sys.argv]),
        "engine": "torch eager, NCHW, batch 1",
        "threads": args.threads,
        "loadavg_before": before,
        "loadavg_after": load_average(),
        "rows": rows,
        "machine": machine_facts(args.threads),
    }
    atomic_write_json(args.out, report)
    print(markdown(rows))
    print(f"load average before: {before}, after: {report['loadavg_after']}; written: {args.out}")


if __name__ == "__main__":
    main()
