"""The tests' Triton server: `tools/triton_server.py`, skipping where its environment cannot be installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.triton_server import ServerUnavailable, TritonServer, serve_with_python_backend

__all__ = ["serve_with_python_backend", "started_server"]


def started_server(repo: Path, log: Path) -> TritonServer:
    try:
        return TritonServer(repo, log).start()
    except ServerUnavailable as err:
        pytest.skip(str(err))
