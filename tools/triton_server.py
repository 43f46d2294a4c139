"""A real NVIDIA Triton Inference Server on this machine (no GPU, no container), for the tests and the benchmark:
the `tritonserver` binary the `nvidia-pytriton` wheel ships, in a virtual environment of its own (cached under
~/.cache/sperm-edge).

    python tools/triton_server.py REPO --python-backend NAME   # serve REPO (after `export --triton REPO`)

That binary carries Triton's Python backend only (no onnxruntime or TensorRT backend), so the tests serve the
exported `model.onnx` through a Python-backend model that runs it with ONNX Runtime (`PYTHON_MODEL` below),
configured by the production `config.pbtxt` with two lines changed: the backend, and CPU instances for GPU
ones. Two traps of that wheel: the backend's stub needs numpy < 2 in the environment whose `bin` is first on
PATH (else every response tensor comes back empty), and its `pytriton` Python API does not start on Python
3.11.7, so the bare binary is started with a model repository and a backend directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

WHEEL = "nvidia-pytriton==0.7.0"
VENV = Path.home() / ".cache" / "sperm-edge" / "triton-0.7.0"

PYTHON_MODEL = '''"""Serves 1/model.onnx with ONNX Runtime inside Triton's Python backend (the tests' stand-in for the
onnxruntime backend a GPU server has): the requests Triton batched run as one session call."""

import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        results = self.session.run(self.outputs, {self.input: np.concatenate(batches)})
        responses, start = [], 0
        for batch in batches:
            stop = start + len(batch)
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(v[start:stop])) for n, v in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses
'''


class ServerUnavailable(RuntimeError):
    """The server's environment cannot be installed here (no network, no wheel for this platform)."""


def triton_environment() -> Path:
    """The cached virtual environment with the server (built on first use)."""
    python = VENV / "bin" / "python"
    if not (VENV / ".complete").is_file():
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", WHEEL, "numpy<2", "onnxruntime"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ServerUnavailable(f"cannot install {WHEEL}: {done.stderr.strip()[-300:]}")
        (VENV / ".complete").touch()
    return VENV


def serve_with_python_backend(model_folder: Path) -> None:
    """Make an exported model folder servable by the Python backend (see the module's docstring)."""
    config = model_folder / "config.pbtxt"
    text = config.read_text()
    if 'backend: "onnxruntime"' not in text or "KIND_GPU" not in text:
        raise ValueError(f"{config} is not an exported onnxruntime configuration")
    config.write_text(text.replace('backend: "onnxruntime"', 'backend: "python"').replace("KIND_GPU", "KIND_CPU"))
    (model_folder / "1" / "model.py").write_text(PYTHON_MODEL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TritonServer:
    """`with TritonServer(repo) as server:` a running server on free ports (`server.http`, `server.grpc`)."""

    def __init__(self, repo: Path, log: Path) -> None:
        self.repo, self.log = repo, log
        self.http = self.grpc = ""
        self.ports: list[int] = []  # kept over a restart
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> TritonServer:
        venv = triton_environment()
        package = next((venv / "lib").glob("python3*/site-packages/pytriton"))
        backends = self.log.parent / "triton-backends"
        if not backends.is_dir():
            shutil.copytree(package / "tritonserver" / "backends", backends)
            stub = package / "tritonserver" / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}"
            shutil.copy(stub / "triton_python_backend_stub", backends / "python")
        ports = self.ports = self.ports or [_free_port() for _ in range(3)]
        self.http, self.grpc = f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"
        libs = [str(package.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
        env = os.environ | {
            "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
            "LD_LIBRARY_PATH": ":".join([*libs, os.environ.get("LD_LIBRARY_PATH", "")]),
        }
        command = [
            str(package / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.repo}",
            f"--backend-directory={backends}",
            f"--http-port={ports[0]}",
            f"--grpc-port={ports[1]}",
            f"--metrics-port={ports[2]}",
            "--exit-on-error=true",
        ]
        self.process = subprocess.Popen(command, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"tritonserver not ready in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", type=Path, help="Model repository (`sperm-edge export BUNDLE --triton REPO`).")
    parser.add_argument("--python-backend", nargs="*", default=[], metavar="NAME", help="Serve these through ORT.")
    args = parser.parse_args()
    for name in args.python_backend:
        serve_with_python_backend(args.repo / name)
    with TritonServer(args.repo, args.repo.parent / "triton.log") as server:
        print(f"serving {args.repo}: HTTP {server.http}, gRPC {server.grpc} (Ctrl-C stops)", flush=True)
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
