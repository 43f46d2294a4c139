"""Benchmarks: every backend and precision on the same bundle, data and machine, side by side.

    from sperm_edge.bench import BenchConfig, run_benchmark, write_all
    result = run_benchmark(BenchConfig(bundle=Path("bundle"), data=Path("data/hushem"), batches=(1, 8)))
    write_all(Path("out"), result.rows, result.machine, stream=result.stream)

Modules: `variants` (what exists and can run here), `eager` (the NCHW PyTorch reference),
`harness` (alternating timed rounds), `accuracy` (accuracy, macro-F1, agreement with PyTorch
FP32), `memory` (peak RSS in a child process), `stream` (the runtime end to end, Grad-CAM++
latency), `machine` (CPU, flags, GPU, versions), `report` (JSON, CSV, Markdown, PNG), `run` (one
run, start to finish).
Importing this package imports neither torch nor a GPU library.
"""

from sperm_edge.bench.harness import TimingConfig
from sperm_edge.bench.report import write_all
from sperm_edge.bench.run import BenchConfig, BenchResult, run_benchmark
from sperm_edge.bench.stream import StreamConfig
from sperm_edge.bench.variants import BACKENDS, REFERENCE

__all__ = [
    "BACKENDS",
    "REFERENCE",
    "BenchConfig",
    "BenchResult",
    "StreamConfig",
    "TimingConfig",
    "run_benchmark",
    "write_all",
]
