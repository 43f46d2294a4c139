"""`--backend triton://HOST:PORT/MODEL`: the runtime classifies through a real Triton server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.engines import open_backend
from sperm_edge.errors import SpermEdgeError
from tests._triton import serve_with_python_backend, started_server
from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def server(tiny_bundle: Path, tmp_path_factory):
    """One server for the module, serving the tiny bundle as `hushem` (exported by the CLI)."""
    root = tmp_path_factory.mktemp("triton")
    assert run_cli(["export", str(tiny_bundle), "--triton", str(root / "repo"), "--name", "hushem"]) == 0
    serve_with_python_backend(root / "repo" / "hushem")
    running = started_server(root / "repo", root / "triton.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pan(tmp_path_factory) -> Path:
    """A pan over a synthetic slide: field mode's requests are one frame's few cells each."""
    from sperm_edge.data.synthetic import write_video

    path = tmp_path_factory.mktemp("pan") / "pan.mp4"
    write_video(path, frames=90, seed=3, size=(480, 360), fps=15.0)
    return path


def _crops(folder: Path, n: int = 6) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        cv2.imwrite(str(folder / f"c{i}.png"), rng.integers(0, 255, (50, 40, 3), dtype=np.uint8))
    return folder


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_run_through_the_server_counts_what_the_local_engine_counts(server, tiny_bundle, tmp_path, protocol) -> None:
    crops = _crops(tmp_path / "crops")
    port = server.grpc if protocol == "grpc" else server.http
    runs = {}
    served = f"triton://{port}/hushem?protocol={protocol}"
    # the bundle, or the repository's model folder (its client bundle: the model stays on the server)
    for name, bundle, backend in (
        ("local", tiny_bundle, "ort-cpu"),
        ("server", tiny_bundle, served),
        ("repo", server.repo / "hushem", served),
    ):
        args = ["run", str(bundle), "--source", str(crops), "--mode", "crop", "--backend", backend, "--headless"]
        assert run_cli([*args, "--threads", "1", "--out", str(tmp_path / name)]) == 0
        lines = (tmp_path / name / "events.jsonl").read_text().splitlines()[1:]
        runs[name] = [json.loads(line) for line in lines]
    assert len(runs["server"]) == len(runs["local"]) == len(runs["repo"]) == 6
    for here, there, repo in zip(runs["local"], runs["server"], runs["repo"], strict=True):
        assert there["class"] == here["class"] and there["confidence"] == pytest.approx(here["confidence"], abs=1e-4)
        assert repo["probs"] == there["probs"]
    report = json.loads((tmp_path / "server" / "report.json").read_text())
    assert report["run"]["backend"] == "triton"


def test_server_mistakes_are_named(server, tiny_bundle, tmp_path) -> None:
    bundle = load_bundle(tiny_bundle)
    with pytest.raises(SpermEdgeError, match=r"has no ready model 'nope' \(it has: hushem\)"):
        open_backend(bundle, f"triton://{server.grpc}/nope").__enter__()
    other = tmp_path / "bundle-96px"
    shutil.copytree(tiny_bundle, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["preprocess"]["img_size"] = 96
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SpermEdgeError, match=r"but the bundle gives images of shape \[-1, \[3, 96, 96\]\]"):
        open_backend(load_bundle(other), f"triton://{server.http}/hushem?protocol=http").__enter__()
    with pytest.raises(SpermEdgeError, match="did not answer"):
        open_backend(bundle, "triton://127.0.0.1:9/hushem?timeout=1").__enter__()
    with pytest.raises(SpermEdgeError, match="has no fp32 model"):  # a client bundle keeps no model of its own
        open_backend(load_bundle(server.repo / "hushem"), "ort-cpu")
    bad_urls = {
        "triton://host/": "expected triton://HOST:PORT/MODEL",
        "triton://h:1/m?protocol=x": "grpc or http",
        "triton://h:1/m?fast=1": "unknown option",
    }
    for url, message in bad_urls.items():
        with pytest.raises(SpermEdgeError, match=message):
            open_backend(bundle, url)


def _client(bundle: Path, source: Path, url: str, out: Path, mode: str = "crop") -> subprocess.Popen:
    args = ["run", str(bundle), "--source", str(source), "--mode", mode, "--backend", url, "--headless"]
    return subprocess.Popen(
        [sys.executable, "-m", "sperm_edge", *args, "--threads", "1", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()[1:]]


def _stats(server) -> tuple[int, int, int]:
    """(requests, executions, images) the server has run for `hushem` so far."""
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(server.http).get_inference_statistics("hushem")["model_stats"][0]
    return stats["inference_stats"]["success"]["count"], stats["execution_count"], stats["inference_count"]


def test_four_clients_share_one_server_which_batches_their_requests(server, tiny_bundle, pan, tmp_path) -> None:
    """Four microscopes in field mode (a frame's few cells a request): the dynamic batcher merges requests."""
    before = _stats(server)
    url = f"triton://{server.grpc}/hushem"
    clients = [_client(tiny_bundle, pan, url, tmp_path / f"c{i}", mode="field") for i in range(4)]
    for client in clients:
        out, _ = client.communicate(timeout=300)
        assert client.returncode == 0, out.decode()
    counts = {len(_events(tmp_path / f"c{i}")) for i in range(4)}
    assert len(counts) == 1 and counts.pop() > 0  # the same clip, the same cells, in every client
    requests, executions, _ = (a - b for a, b in zip(_stats(server), before, strict=True))
    assert executions < requests  # the dynamic batcher ran several clients' requests as one batch


def test_a_server_restarted_mid_run_costs_no_cell(server, tiny_bundle, pan, tmp_path) -> None:
    source = pan
    local = _client(tiny_bundle, source, "ort-cpu", tmp_path / "local", mode="field")
    assert local.wait(timeout=300) == 0
    run = _client(tiny_bundle, source, f"triton://{server.grpc}/hushem?wait=90", tmp_path / "served", mode="field")
    log = tmp_path / "served" / "events.jsonl"
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline and not (log.is_file() and len(log.read_text()) > 200):
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before the server could be restarted under it"
    server.process.kill()  # the server dies mid-run...
    server.process.wait()
    time.sleep(1.0)
    server.start()  # ...and comes back on the same ports
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out.decode()
    assert "retrying" in out.decode()
    served, expected = _events(tmp_path / "served"), _events(tmp_path / "local")
    assert [e["id"] for e in served] == [e["id"] for e in expected]  # none lost, none doubled
    assert [e["class"] for e in served] == [e["class"] for e in expected]


def test_bench_measures_the_server_beside_the_local_engine(server, tiny_bundle, tmp_path) -> None:
    url = f"triton://{server.grpc}/hushem"
    args = ["bench", str(tiny_bundle), "--backends", f"ort-cpu,{url}", "--batch", "1,4", "--no-stream"]
    assert run_cli([*args, "--threads", "1", "--out", str(tmp_path / "bench")]) == 0
    rows = json.loads((tmp_path / "bench" / "bench.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    served = [r for r in rows if r["backend"] == url]
    assert [r["batch"] for r in served] == [1, 4] and all(r["status"] == "ok" and r["p50_ms"] > 0 for r in served)
