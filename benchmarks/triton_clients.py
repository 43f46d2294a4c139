"""Many microscopes, one server: aggregate throughput and latency of concurrent `sperm-edge run` clients sharing a
Triton server, against the same clients each with its own local engine, on the same machine.

For each client count (1, 2, 4, 8) and mode, that many real `sperm-edge run BUNDLE` processes run field mode on the
same clip at once, as microscopes would (each frame's cells one request): `server` through
`--backend triton://.../NAME` (one server, its dynamic batcher merging their requests), `local` through ONNX
Runtime in each process (one thread each). Cells per second is every client's classified crops over the span from
the first client's run start to the last one's end (Python's start-up left out); p95 is the clients'
95th-percentile network time per frame (`stages_ms.network` of their reports, the worst client); the server's
mean batch is the images it ran per model execution. The server here is `tools/triton_server.py`: Triton's
Python backend running the exported `model.onnx` with ONNX Runtime on this machine's CPU (a GPU server runs the
onnxruntime or TensorRT backend).

    sperm-edge data real-field --data ../shared/data --style hushem --seed 21 --out runs/rf   # real cells, composed
    python benchmarks/triton_clients.py --bundle demo-out/bundle --source runs/rf/clip.mp4 --out benchmarks/results

writes OUT/triton.json and OUT/triton.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sperm_edge.bench.machine import machine_facts  # noqa: E402
from sperm_edge.hardware import cpu_name  # noqa: E402
from sperm_edge.io import atomic_write_bytes, atomic_write_json  # noqa: E402
from tools.triton_server import ServerUnavailable, TritonServer, serve_with_python_backend  # noqa: E402

NAME = "bench"


def server_stats(server: TritonServer) -> tuple[int, int]:
    """(images, executions) the server has run for the model so far."""
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(server.http).get_inference_statistics(NAME)["model_stats"][0]
    return stats["inference_count"], stats["execution_count"]


def run_group(bundle: Path, source: Path, backend: str, clients: int, work: Path) -> dict:
    """`clients` concurrent runs; their cells, the group's wall time and the worst client's p95."""
    outs = [work / f"{backend.split(':')[0]}-{clients}-{i}" for i in range(clients)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "sperm_edge", "run", str(bundle), "--source", str(source), "--mode", "field"]
            + ["--backend", backend, "--threads", "1", "--headless", "--explain", "none", "--out", str(out)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for out in outs
    ]
    for process in processes:
        _, err = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise SystemExit(f"a client failed ({backend}): {err.decode()[-500:]}")
    wall = time.perf_counter() - started
    reports = [json.loads((out / "report.json").read_text()) for out in outs]
    cells = sum(r["inferences"] for r in reports)  # crops the network classified
    # the span from the first run's start to the last one's end: Python's start-up and imports left out
    starts = [datetime.fromisoformat(r["run"]["started"]).timestamp() for r in reports]
    span = max(s + r["elapsed_s"] for s, r in zip(starts, reports, strict=True)) - min(starts)
    return {
        "cells": cells,
        "wall_s": round(wall, 2),
        "span_s": round(span, 2),
        "cells_per_s": round(cells / span, 1),
        "p95_ms": max(r["stages_ms"]["network"]["p95"] for r in reports),
    }


def markdown(rows: list[dict], machine: dict, command: str) -> str:
    lines = [
        "# Many clients, one Triton server, against a local engine each",
        "",
        f"Written by `{command}` on {cpu_name()} ({os.cpu_count()} cores, load average "
        f"{machine['load_average']:.2f} before). The server is Triton's Python backend running the exported "
        "ONNX model with ONNX Runtime on this CPU (see the script's docstring).",
        "",
        "| clients | mode | cells/s (all clients) | p95 network ms (worst client) | mean server batch |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        batch = "" if row["mean_server_batch"] is None else f"{row['mean_server_batch']:.1f}"
        lines.append(f"| {row['clients']} | {row['mode']} | {row['cells_per_s']} | {row['p95_ms']:.1f} | {batch} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True, help="Bundle folder (`sperm-edge export`).")
    parser.add_argument("--source", type=Path, required=True, help="The clip every client runs (data real-field).")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"bundle folder not found: {args.bundle}")
    if not args.source.is_file():
        raise SystemExit(f"clip not found: {args.source}")
    machine = machine_facts(1)
    machine["load_average"] = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "repo"
        export = [sys.executable, "-m", "sperm_edge", "export", str(args.bundle), "--triton", str(repo), "--name", NAME]
        subprocess.run(export, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        serve_with_python_backend(repo / NAME)
        try:
            server = TritonServer(repo, work / "triton.log").start()
        except (ServerUnavailable, RuntimeError) as err:
            raise SystemExit(f"the Triton server did not start: {err}") from None
        try:
            for clients in args.clients:
                for mode in ("server", "local"):
                    backend = f"triton://{server.grpc}/{NAME}" if mode == "server" else "ort-cpu"
                    before = server_stats(server)
                    row = {
                        "clients": clients,
                        "mode": mode,
                        **run_group(args.bundle, args.source, backend, clients, work),
                    }
                    images, executions = (a - b for a, b in zip(server_stats(server), before, strict=True))
                    row["mean_server_batch"] = (
                        round(images / executions, 2) if mode == "server" and executions else None
                    )
                    rows.append(row)
                    print(row, flush=True)
        finally:
            server.stop()
    command = "python benchmarks/triton_clients.py " + " ".join(sys.argv[1:])
    result = {
        "command": command,
        "bundle": str(args.bundle),
        "source": str(args.source),
        "machine": machine,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "triton.json", result)
    atomic_write_bytes(args.out / "triton.md", markdown(rows, machine, command).encode())
    print(markdown(rows, machine, command))


if __name__ == "__main__":
    main()
