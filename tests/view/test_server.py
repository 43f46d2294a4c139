"""What anyone on the network can do to the view before its token is checked: idle or slow connections, streams."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from sperm_edge.view.app import build_app
from sperm_edge.view.frames import FrameSlot, JpegFrames
from sperm_edge.view.server import ViewServer
from sperm_edge.view.state import FinishedControls, load_run
from tests.view.conftest import live_run, read_mjpeg, request, wait_for

TOKEN = "a-token-long-enough-for-the-network"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def served(run_dir: Path, frames: JpegFrames | None = None, **limits) -> Iterator[int]:
    """The finished run's page on a free loopback port with the given limits; yields the port."""
    state = load_run(run_dir)
    app = build_app(state, FinishedControls(state), frames, 10.0, TOKEN, **limits.pop("app", {}))
    with ViewServer(app, "127.0.0.1", 0, **limits) as server:
        yield server.port


def idle_sockets(port: int, n: int, stack: ExitStack) -> list[socket.socket]:
    """`n` connections that send nothing, closed when `stack` closes."""
    sockets = []
    for _ in range(n):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, wait: float = 0.0) -> bool:
    """True when the server has closed `sock` (a read returns end of file or a reset), within `wait` s."""
    sock.settimeout(wait or 0.001)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except ConnectionResetError:
        return True


def test_a_connection_that_sends_no_request_is_closed_at_the_header_deadline(finished_run: Path) -> None:
    with served(finished_run, header_timeout=0.5) as port, ExitStack() as stack:
        silent, slow = idle_sockets(port, 2, stack)
        opened = time.monotonic()
        slow.sendall(b"GET /api/status HTTP/1.1\r\n")  # a slowloris: headers a byte at a time, never finished
        for byte in b"Host: 127.0.0.1\r\nX-Slow: yes":
            if closed_by_server(slow, 0.05):
                break
            slow.send(bytes([byte]))
        assert closed_by_server(silent, 3.0) and closed_by_server(slow, 3.0)
        assert time.monotonic() - opened < 3.0
        assert request(port, "/api/status", headers=AUTH)[0] == 200  # a real request is not held to it


def test_slow_connections_beyond_the_cap_do_not_lock_out_a_real_request(finished_run: Path) -> None:
    with served(finished_run, max_connections=8) as port, ExitStack() as stack:
        sockets = idle_sockets(port, 40, stack)
        for sock in sockets:
            sock.sendall(b"G")  # a request begun and never finished: the view holds it, waiting for headers
        status, _, body = request(port, "/api/status", headers=AUTH)
        assert status == 200 and json.loads(body)["finished"]
        still_open = wait_for(lambda: sum(not closed_by_server(s) for s in sockets) <= 8 or None, 5,
                              "the view to close the connections beyond its cap")  # fmt: skip
        assert still_open


def test_connections_that_send_nothing_never_reach_the_view(finished_run: Path) -> None:
    """Linux's TCP_DEFER_ACCEPT: the kernel hands a connection over only once it has data, so idle ones cost the
    view (and the run it lives in) nothing at all."""
    state = load_run(finished_run)
    app = build_app(state, FinishedControls(state), None, 10.0, TOKEN)
    with ViewServer(app, "127.0.0.1", 0) as server, ExitStack() as stack:
        idle_sockets(server.port, 40, stack)
        time.sleep(0.5)
        assert server.limits.waiting == {} and server.limits.refused == 0
        assert request(server.port, "/api/status", headers=AUTH)[0] == 200


def test_streams_beyond_the_cap_are_refused_with_503(finished_run: Path) -> None:
    slot = FrameSlot()
    slot.put(np.full((120, 160, 3), 90, np.uint8), [], 10.0)
    frames = JpegFrames(slot)
    with served(finished_run, frames, app={"max_streams": 1}) as port, ExitStack() as stack:
        watcher = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        watcher.sendall(f"GET /stream.mjpg?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert watcher.recv(64).startswith(b"HTTP/1.1 200")
        wait_for(lambda: frames.clients == 1, 5, "the first stream to start")
        status, _, body = request(port, f"/stream.mjpg?token={TOKEN}")
        assert status == 503 and b"1 streams" in body
        watcher.close()
        wait_for(lambda: frames.clients == 0, 5, "the first stream to end")
        kind, parts = read_mjpeg(port, f"/stream.mjpg?token={TOKEN}", frames=1)
        assert len(parts) == 1
    slot.close()


def test_500_begun_requests_leave_a_run_with_few_file_handles_going(
    tiny_bundle: Path, watch_clip: Path, tmp_path: Path
) -> None:
    """Hundreds of real sockets, each with a request begun and never finished (so the kernel hands them all to the
    view), against `sperm-edge run --view`, whose process may open only 256 files."""
    out = tmp_path / "besieged"
    args = ["--fps", "5", "--loop", "--view-linger", "0", "--min-confidence", "1.0"]
    with live_run(tiny_bundle, watch_clip, out, *args, token=TOKEN, open_files=256) as run, ExitStack() as stack:
        for sock in idle_sockets(run.port, 500, stack):
            try:
                sock.sendall(b"G")
            except OSError:  # closed by the view already: the cap at work
                pass

        def frames() -> int:
            return json.loads(request(run.port, "/api/status", headers=AUTH)[2])["frames"]

        before = frames()
        wait_for(lambda: frames() > before + 10, 60, "the run to go on")
        assert request(run.port, "/api/finish", method="POST", headers=AUTH)[0] == 200
        assert run.wait(60) == 0, run.output()[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "stopped" and report["flagged"] > 0  # finished from the page: a stop, not an end
    assert "Too many open files" not in run.output()
    assert len(list((out / "flagged").glob("*.png"))) > 0
