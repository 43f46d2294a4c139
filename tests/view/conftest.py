"""Live-view fixtures: a tiny bundle, a clip long enough to watch, runs served on free loopback ports.

Every wait here is bounded in time (`wait_for`) and every read has a timeout, so a broken server
fails a test instead of hanging the suite.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.runtime.conftest import clip, tiny_bundle  # noqa: F401  (fixtures shared with the runtime tests)

WATCH_FRAMES = 90
WATCH_SIZE = (480, 360)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Call `check` until it returns something truthy (returned), for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def request(port: int, path: str, method: str = "GET", headers: dict | None = None, timeout: float = 5.0):
    """(status, headers, body) of one request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get_json(port: int, path: str, **kwargs):
    status, _, body = request(port, path, **kwargs)
    assert status == 200, (path, status, body[:200])
    return json.loads(body)


def read_mjpeg(port: int, path: str = "/stream.mjpg", frames: int = 3, timeout: float = 20.0,
               headers: dict | None = None) -> tuple[str, list[bytes]]:  # fmt: skip
    """Read `frames` JPEG parts of the MJPEG stream (bounded in bytes and time): (content type, parts)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        assert response.status == 200, response.status
        kind = response.getheader("Content-Type")
        parts: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(parts) < frames and time.monotonic() < deadline:
            line = response.fp.readline(200)
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                response.fp.readline(10)  # the blank line after the part's headers
                parts.append(response.fp.read(length))
        return kind, parts
    finally:
        conn.close()


@pytest.fixture(scope="session")
def watch_clip(tmp_path_factory) -> Path:
    """A synthetic pan of WATCH_FRAMES frames: replayed at a few FPS, long enough to watch and click."""
    from sperm_edge.data.synthetic import write_video

    path = tmp_path_factory.mktemp("watch") / "pan.mp4"
    write_video(path, frames=WATCH_FRAMES, seed=5, size=WATCH_SIZE, fps=15.0)
    return path


@dataclass
class LiveRun:
    """A `sperm-edge run --view` in its own process."""

    proc: subprocess.Popen
    port: int
    out: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"the run did not end within {timeout:.0f} s:\n{self.output()[-2000:]}") from err


@contextmanager
def live_run(bundle: Path, source: Path, out: Path, *args: str, token: str | None = None,
             open_files: int | None = None) -> Iterator[LiveRun]:  # fmt: skip
    """Start `sperm-edge run BUNDLE --source SOURCE --view 127.0.0.1:PORT ARGS`; wait until the page answers.

    `open_files`: the run's RLIMIT_NOFILE (soft and hard), as a service unit's LimitNOFILE would set it.
    """
    port = free_port()
    command = [sys.executable, "-m", "sperm_edge", "run", str(bundle), "--source", str(source), "--headless",
               "--out", str(out), "--view", f"127.0.0.1:{port}", *args]  # fmt: skip
    if token is not None:
        command += ["--token", token]
    log = out.with_name(out.name + ".log")
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    with open(log, "w") as handle:
        limit = None if open_files is None else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files,) * 2)
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, preexec_fn=limit)
    run = LiveRun(proc, port, out, log)
    try:

        def answers() -> bool:
            return proc.poll() is not None or request(port, "/api/status")[0] in (200, 401)

        wait_for(answers, 60, "the live view to answer")
        assert proc.poll() is None, run.output()[-2000:]
        yield run
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture(scope="session")
def finished_run(tiny_bundle: Path, clip, tmp_path_factory) -> Path:  # noqa: F811
    """A run folder with flagged cells and their Grad-CAM++ explanations."""
    out = tmp_path_factory.mktemp("finished") / "run"
    path, _ = clip
    args = ["run", str(tiny_bundle), "--source", str(path), "--headless", "--explain", "flagged", "--out", str(out),
            "--max-frames", "12"]  # fmt: skip
    assert run_cli(args) == 0
    return out
