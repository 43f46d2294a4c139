"""uvicorn in a thread of its own: the stream's threads never wait for the web side.

The socket is bound here, before uvicorn starts, so a taken port fails at once with a clear
error (and port 0 picks a free one, reported in `port`).

Anyone on the network can open connections before the token is checked (it travels in the
request), so the view bounds what they can hold. On Linux the socket defers accepting
(TCP_DEFER_ACCEPT): a connection that sends nothing never reaches the app, so idle connections and
a flood of them cost the run nothing. Those that do send are held to at most `max_connections` open at
once, and must send their request headers within `header_timeout` seconds of opening. uvicorn has
neither (`limit_concurrency` answers 503 only once headers arrive; its keep-alive timer starts
after the first response), so they live in a subclass of its h11 protocol. At the cap, a new
connection closes the oldest one still waiting for headers: idle sockets cannot lock out the
person at the microscope, and the run's file handles are never the view's to spend.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from functools import partial

from uvicorn.protocols.http.h11_impl import H11Protocol

from sperm_edge.errors import SpermEdgeError

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
HEADER_TIMEOUT_S = 10.0
# asyncio accepts as many connections in one go as the backlog it was given, before any of them is seen by its
# protocol: uvicorn's 2048 lets a burst of connects take 2048 file handles at once. Given 16, a burst is a few
# batches of 16 in flight while the cap closes them; the kernel's own queue is set deeper once serving.
ACCEPT_BATCH = 16
KERNEL_BACKLOG = 1024


class _ConnectionLimits:
    """Shared by one server's connections: the caps, and the connections still waiting for headers (oldest first)."""

    def __init__(self, max_connections: int, header_timeout: float) -> None:
        self.max_connections, self.header_timeout = max_connections, header_timeout
        self.waiting: dict[GuardedH11Protocol, None] = {}  # insertion-ordered: the oldest comes first
        self.refused = 0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a cap on open connections and a deadline for a request's headers."""

    def __init__(self, *args, limits: _ConnectionLimits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self._limits
        if len(self.connections) > limits.max_connections:
            limits.refused += 1
            oldest = next(iter(limits.waiting), None)
            if oldest is None:  # every connection is busy with a request: this one is refused (closed)
                transport.close()
                return
            oldest.transport.close()
            oldest._headers_done()
        limits.waiting[self] = None
        self._header_timer = self.loop.call_later(limits.header_timeout, self._headers_late)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:
            self._headers_done()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)

    def _headers_done(self) -> None:
        self._limits.waiting.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        self._headers_done()
        self.transport.close()


class ViewServer:
    """`with ViewServer(app, host, port) as server:` serves `app` until the block ends."""

    def __init__(self, app, host: str, port: int, start_timeout: float = 10.0,
                 max_connections: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT_S) -> None:  # fmt: skip
        self.app, self.host, self.port = app, host, port
        self.start_timeout = start_timeout
        self.limits = _ConnectionLimits(max_connections, header_timeout)
        self._server = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ViewServer:
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            reason = err.strerror or err
            raise SpermEdgeError(f"cannot serve the live view on {self.host}:{self.port}: {reason}") from err
        self.port = sock.getsockname()[1]
        if hasattr(socket, "TCP_DEFER_ACCEPT"):  # Linux: a connection reaches the app only once it sends data
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, int(self.limits.header_timeout))
        config = uvicorn.Config(
            self.app,
            http=partial(GuardedH11Protocol, limits=self.limits),  # type: ignore[arg-type]
            backlog=ACCEPT_BATCH,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="view", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise SpermEdgeError(f"the live view did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        # asyncio listened with ACCEPT_BATCH, which is also how many it accepts at once; the kernel's own queue
        # (and, with TCP_DEFER_ACCEPT, its queue of connections that have sent nothing yet) may be deeper
        sock.listen(KERNEL_BACKLOG)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.warning("the live view's server did not stop within 5 s")
        self._server = self._thread = None
