"""The live view's cost to the stream: FPS headless, with the view and no client, and with two clients watching.

    python benchmarks/live_view_fps.py BUNDLE [--clip CLIP] [--rounds 3]

Each measurement is one `sperm-edge run BUNDLE --source CLIP --headless --explain none` in its own
process, reading the clip as fast as it decodes (FPS is what the machine sustains; the report's
`fps`). The three conditions alternate within every round (their order rotating), so a busy
neighbour or a clock change hits all of them alike; compare the medians of one run of this
script, not figures across runs. A client is `benchmarks/_live.py watch`: it reads the MJPEG
stream at the view's rate and polls the API as the page does; the clients run as their own
processes on the same cores, as a browser on this machine would.

Writes OUT/fps.json (every run, the load average before it, the machine) and OUT/fps.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _live import REPO, free_port, start_run, wait_ready

from sperm_edge.bench.machine import describe_machine, machine_facts
from sperm_edge.io import atomic_write_bytes, atomic_write_json

CONDITIONS = ("headless", "view, no client", "view, 2 clients")


def measure(bundle: Path, clip: Path, scratch: Path, condition: str, view_fps: float) -> dict:
    """One run under `condition`: the report's figures, the load average before it, what the clients received."""
    out = scratch / "run"
    extra = ["--explain", "none"]
    port = free_port()
    if condition != "headless":
        extra += ["--view", f"127.0.0.1:{port}", "--view-linger", "0", "--view-fps", str(view_fps)]
    load = os.getloadavg()
    proc = start_run(bundle, clip, out, *extra, log=scratch / "run.log")
    watchers = []
    try:
        if condition != "headless":
            wait_ready(proc, port)
        if condition == "view, 2 clients":
            command = [sys.executable, str(REPO / "benchmarks" / "_live.py"), "watch", str(port)]
            watchers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        if proc.wait(900) != 0:
            raise RuntimeError(f"the run failed:\n{(scratch / 'run.log').read_text()[-2000:]}")
        clients = [json.loads(w.communicate(timeout=60)[0]) for w in watchers]
    finally:
        for process in (proc, *watchers):
            if process.poll() is None:
                process.kill()
                process.wait(10)
    report = json.loads((out / "report.json").read_text())
    return {
        "condition": condition,
        "fps": report["fps"],
        "frames": report["frames"],
        "cells": report["cells"],
        "cpu_ms_per_frame": report["cpu_ms_per_frame"],
        "loadavg_before": [round(v, 2) for v in load],
        "clients": clients,
    }


def _paired(runs: list[dict], condition: str) -> list[float]:
    """FPS of `condition` over the headless FPS of the same round: slow drift cancels out."""
    headless = {r["round"]: r["fps"] for r in runs if r["condition"] == "headless"}
    return [r["fps"] / headless[r["round"]] for r in runs if r["condition"] == condition]


def summarise(runs: list[dict]) -> list[dict]:
    """Per condition: FPS (median, range, ratio to headless) and the run's CPU time per frame (and its ratio).

    CPU time per frame counts every thread of the run's process (the web server's too) and not
    other processes, so it stays comparable on a shared machine where FPS does not.
    """

    def median(condition: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["condition"] == condition)

    base_fps, base_cpu = median("headless", "fps"), median("headless", "cpu_ms_per_frame")
    rows = []
    for condition in CONDITIONS:
        fps = [r["fps"] for r in runs if r["condition"] == condition]
        received = [c["frames"] for r in runs if r["condition"] == condition for c in r["clients"]]
        rows.append({
            "condition": condition,
            "runs": len(fps),
            "fps_median": round(statistics.median(fps), 2),
            "fps_min": min(fps),
            "fps_max": max(fps),
            "vs_headless": round(statistics.median(fps) / base_fps, 3),
            "vs_headless_paired": round(statistics.median(_paired(runs, condition)), 3),
            "cpu_ms_per_frame_median": median(condition, "cpu_ms_per_frame"),
            "cpu_vs_headless": round(median(condition, "cpu_ms_per_frame") / base_cpu, 3),
            "client_frames_median": statistics.median(received) if received else None,
        })  # fmt: skip
    return rows


def markdown(result: dict) -> str:
    lines = [
        "# Live view: stream FPS with and without the page",
        "",
        f"`{result['command']}`",
        "",
        f"Bundle `{result['bundle']}`, clip `{result['clip']}` ({result['runs'][0]['frames']} frames, field mode), "
        f"view at most {result['view_fps']:g} FPS, {result['rounds']} rounds alternating the conditions.",
        "",
        f"Machine: {describe_machine(result['machine'])}.",
        "",
        "| condition | runs | median FPS | min-max | FPS vs headless | same round | CPU ms per frame "
        "| CPU vs headless | frames each client got |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["summary"]:
        got = "-" if row["client_frames_median"] is None else f"{row['client_frames_median']:g}"
        lines.append(f"| {row['condition']} | {row['runs']} | {row['fps_median']:.2f} | {row['fps_min']:.2f}-"
                     f"{row['fps_max']:.2f} | {100 * row['vs_headless']:.1f}% | {100 * row['vs_headless_paired']:.1f}% "
                     f"| {row['cpu_ms_per_frame_median']:.1f} "
                     f"| {100 * row['cpu_vs_headless']:.1f}% | {got} |")  # fmt: skip
    loads = [r["loadavg_before"][0] for r in result["runs"]]
    lines += [
        "",
        f"Load average (1 min) before the runs: {min(loads):.2f}-{max(loads):.2f}. FPS is what the machine gave "
        'the run; "same round": the median over rounds of the FPS over that round\'s headless FPS; '
        "CPU ms per frame is the run process's own CPU time (every thread, the web server's too) per "
        "frame, which other processes on a shared machine do not change. The clients' own CPU is not in it.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--clip", type=Path, help="Video to stream (default: a synthetic pan, written here).")
    parser.add_argument("--frames", type=int, default=90, help="Frames of the synthetic clip.")
    parser.add_argument("--size", default="1280x960", help="Synthetic clip size WIDTHxHEIGHT.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--view-fps", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "live_view")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        clip = args.clip
        if clip is None:
            from sperm_edge.data.synthetic import write_video

            width, height = (int(v) for v in args.size.split("x"))
            clip = write_video(scratch / "pan.mp4", frames=args.frames, seed=0, size=(width, height))
        runs = []
        for round_ in range(args.rounds):
            order = CONDITIONS[round_ % 3 :] + CONDITIONS[: round_ % 3]
            for condition in order:
                run = measure(args.bundle, clip, scratch, condition, args.view_fps)
                runs.append({"round": round_, **run})
                print(f"round {round_} {condition:16s} {run['fps']:6.2f} FPS  load {run['loadavg_before'][0]:.2f}",
                      flush=True)  # fmt: skip
        clip_name = str(args.clip) if args.clip else f"synthetic pan {args.size}, {args.frames} frames, seed 0"
    result = {
        "command": "python benchmarks/live_view_fps.py " + " ".join(sys.argv[1:]),
        "bundle": str(args.bundle),
        "clip": clip_name,
        "view_fps": args.view_fps,
        "rounds": args.rounds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_facts(os.cpu_count() or 1),
        "runs": runs,
        "summary": summarise(runs),
    }
    atomic_write_json(args.out / "fps.json", result)
    atomic_write_bytes(args.out / "fps.md", markdown(result).encode())
    print(markdown(result))


if __name__ == "__main__":
    main()
