"""uvicorn in a thread of its own: the stream's threads never wait for the web side.

The socket is bound here, before uvicorn starts, so a taken port fails at once with a clear
error (and port 0 picks a free one, reported in `port`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from sperm_edge.errors import SpermEdgeError

log = logging.getLogger(__name__)


class ViewServer:
    """`with ViewServer(app, host, port) as server:` serves `app` until the block ends."""

    def __init__(self, app, host: str, port: int, start_timeout: float = 10.0) -> None:
        self.app, self.host, self.port = app, host, port
        self.start_timeout = start_timeout
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
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
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
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.warning("the live view's server did not stop within 5 s")
        self._server = self._thread = None
