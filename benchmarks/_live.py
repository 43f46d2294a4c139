"""Shared by the scripts that run `sperm-edge run` in its own process (the live view's, the faults'): start it, wait
for its view, watch it like the page does, and build the test suite's tiny bundle.

    python benchmarks/_live.py watch PORT [--token T]   # a client: the MJPEG stream plus the page's polling

A watcher reads the stream until it ends, polls /api/status and /api/events as the page does
(every 0.7 s), and prints one JSON line: frames received, JPEG bytes, the last status's `view`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.7


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(port: int, path: str, method: str = "GET", token: str | None = None, timeout: float = 5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        body = response.read()
        return json.loads(body) if response.status == 200 else None
    finally:
        conn.close()


def start_run(
    bundle: Path,
    source: Path | str,
    out: Path,
    *extra: str,
    log: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
    program: list[str] | None = None,
) -> subprocess.Popen:
    """`sperm-edge run BUNDLE --source SOURCE --headless --out OUT EXTRA` with this checkout on PYTHONPATH.

    `preexec_fn` runs in the child before it starts (resource limits); `program` replaces `python -m sperm_edge`
    (a script that starts the CLI after changing something in its process)."""
    program = program or [sys.executable, "-m", "sperm_edge"]
    command = [*program, "run", str(bundle), "--source", str(source), "--headless", "--out", str(out), "--force",
               *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    sink = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)


def tiny_bundle(work: Path) -> Path:
    """The test suite's tiny bundle (Lite0 + CBAM at 64 px, untrained head) under `work`, built in a subprocess:
    it needs torch, and the scripts that time the runtime must not load it."""
    script = "import sys; from pathlib import Path; from tests.runtime._bundle import build_tiny_bundle; "
    script += "print(build_tiny_bundle(Path(sys.argv[1])))"
    done = subprocess.run([sys.executable, "-c", script, str(work)], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"building the tiny bundle failed:\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = 120.0, token: str | None = None) -> None:
    """Until the page answers; fails if the run exits first or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the run exited ({proc.returncode}) before its view answered")
        try:
            if get_json(port, "/api/status", token=token, timeout=1.0) is not None:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the view on port {port} did not answer within {timeout:.0f} s")


def watch(port: int, token: str | None = None, limit_s: float = 600.0) -> dict:
    """Read the MJPEG stream until it ends (or `limit_s`), polling the API as the page does."""
    result = {"frames": 0, "bytes": 0, "polls": 0, "view": None}
    stop = threading.Event()

    def poll() -> None:
        since = 0
        while not stop.is_set():
            try:
                status = get_json(port, "/api/status", token=token, timeout=2.0)
                events = get_json(port, f"/api/events?since={since}", token=token, timeout=2.0)
            except OSError:
                return
            if status is None or events is None:
                return
            result["polls"] += 1
            result["view"] = status.get("view")
            since = events[-1]["id"] if events else since
            stop.wait(POLL_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
    deadline = time.monotonic() + limit_s
    try:
        query = f"?token={token}" if token else ""
        conn.request("GET", f"/stream.mjpg{query}")
        response = conn.getresponse()
        while time.monotonic() < deadline:
            line = response.fp.readline(200)
            if not line:
                break  # the stream ended with the run
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                response.fp.readline(10)
                result["bytes"] += len(response.fp.read(length))
                result["frames"] += 1
    except OSError:
        pass
    finally:
        stop.set()
        conn.close()
    poller.join(timeout=3.0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["watch"])
    parser.add_argument("port", type=int)
    parser.add_argument("--token")
    parser.add_argument("--limit", type=float, default=600.0, help="Stop watching after this many seconds.")
    args = parser.parse_args()
    print(json.dumps(watch(args.port, args.token, args.limit)), flush=True)


if __name__ == "__main__":
    main()
