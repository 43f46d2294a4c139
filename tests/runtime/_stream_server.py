"""A real MPEG-TS-over-HTTP stream server on 127.0.0.1: Debian's `ffmpeg` in listen mode.

`ffmpeg -listen 1` serves one client and frees the port once it has accepted it, so a fresh
server can take the port while an old one is frozen with its client still connected: exactly a
camera that hangs without closing the connection and comes back on reconnect.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamServer:
    """Start, kill, freeze and thaw ffmpeg stream servers on one port; everything started is ended on exit."""

    def __init__(self, size: str = "160x120", rate: int = 25) -> None:
        if shutil.which("ffmpeg") is None:
            pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/stream.ts"
        self.size, self.rate = size, rate
        self.current: subprocess.Popen | None = None
        self._all: list[subprocess.Popen] = []

    def start(self) -> StreamServer:
        """Serve on the port, and return once the port listens; fail saying why when it does not.

        The first start may move to another port if this one was taken in the meantime (the free
        port is closed again before ffmpeg binds it); a restart keeps the port its clients use."""
        may_move = not self._all
        for _ in range(3):
            process = self._spawn()
            deadline = time.monotonic() + 30  # a loaded 2-core machine starts ffmpeg slowly
            while process.poll() is None and not self.listening() and time.monotonic() < deadline:
                time.sleep(0.05)  # no test connection: it serves one client
            if self.listening():
                return self
            if process.poll() is None or not may_move:
                break
            self.port = _free_port()
            self.url = f"http://127.0.0.1:{self.port}/stream.ts"
        process.kill()
        process.wait()
        process.stderr.seek(0)
        pytest.fail(f"ffmpeg does not listen on {self.url} (exit {process.returncode}): {process.stderr.read()!r}")

    def _spawn(self) -> subprocess.Popen:
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"testsrc=size={self.size}:rate={self.rate}",
            "-c:v", "mpeg2video", "-g", "5", "-q:v", "5", "-f", "mpegts", "-listen", "1", self.url,
        ]  # fmt: skip
        errors = tempfile.TemporaryFile(mode="w+")
        self.current = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        self.current.stderr = errors
        self._all.append(self.current)
        return self.current

    def listening(self) -> bool:
        """Whether a socket listens on the port (the kernel's table: /proc/net/tcp, state 0A)."""
        wanted = f"0100007F:{self.port:04X}"
        with open("/proc/net/tcp") as table:
            return any(f"{wanted} 00000000:0000 0A" in line for line in table)

    def kill(self) -> None:
        """The server dies: its client's connection closes."""
        if self.current is not None:
            self.current.kill()
            self.current.wait()

    def freeze(self) -> subprocess.Popen:
        """The server stops sending but keeps its client's connection open (SIGSTOP)."""
        frozen = self.current
        frozen.send_signal(signal.SIGSTOP)
        return frozen

    @staticmethod
    def thaw(process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGCONT)

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        for process in self._all:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()
            process.stderr.close()
