"""`sperm-edge export --triton`: a model repository that a real Triton server loads and answers from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.engines import open_backend
from sperm_edge.export.triton import TritonOptions, model_config, onnx_tensors
from tests._triton import serve_with_python_backend, started_server
from tests.conftest import run_cli
from tests.runtime._bundle import build_tiny_bundle


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.getbasetemp())


def test_config_declares_every_output_batching_and_instances(tiny_bundle: Path) -> None:
    inputs, outputs = onnx_tensors(load_bundle(tiny_bundle).onnx_path())
    assert [t.name for t in inputs] == ["input"] and inputs[0].dims == (3, 64, 64)
    assert [t.name for t in outputs] == ["logits", "cam", "features"]
    text = model_config("m", inputs, outputs, TritonOptions(max_batch_size=8, preferred_batch_sizes=(4, 8, 16)))
    assert 'name: "m"' in text and 'backend: "onnxruntime"' in text and "max_batch_size: 8" in text
    assert "preferred_batch_size: [ 4, 8 ]" in text and "kind: KIND_GPU" in text
    assert "dims: [ 4 ]" in text and "dims: [ 3, 64, 64 ]" in text
    small = model_config("m", inputs, outputs, TritonOptions(max_batch_size=2))
    assert "preferred_batch_size: [ 2 ]" in small  # none of the preferred sizes fits: the largest batch is preferred


def test_export_writes_a_repository_the_server_loads_and_answers_like_the_local_engine(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    import tritonclient.http as httpclient

    repo = tmp_path / "repo"
    assert run_cli(["export", str(tiny_bundle), "--triton", str(repo), "--name", "hushem", "--max-batch", "8"]) == 0
    model = repo / "hushem"
    assert (model / "1" / "model.onnx").read_bytes() == (tiny_bundle / "model.onnx").read_bytes()
    manifest = json.loads((model / "sperm-edge" / "manifest.json").read_text())
    assert manifest["classes"] == load_bundle(tiny_bundle).card.classes
    serve_with_python_backend(model)
    rng = np.random.default_rng(0)
    batch = rng.normal(0, 1, (3, 3, 64, 64)).astype(np.float32)
    with open_backend(load_bundle(tiny_bundle), "ort-cpu", threads=1) as engine:
        local = engine.infer(batch)
    server = started_server(repo, tmp_path / "triton.log")
    try:
        client = httpclient.InferenceServerClient(server.http)
        config = client.get_model_config("hushem")  # the server's reading of the exported config
        assert config["max_batch_size"] == 8 and config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
        assert [o["name"] for o in config["output"]] == ["logits", "cam", "features"]
        request = httpclient.InferInput("input", list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        reply = client.infer(
            "hushem", [request], outputs=[httpclient.InferRequestedOutput(n) for n in ("logits", "cam")]
        )
    finally:
        server.stop()
    np.testing.assert_allclose(reply.as_numpy("logits"), local.logits, atol=1e-5)
    np.testing.assert_allclose(reply.as_numpy("cam"), local.cam, atol=1e-5)


def test_bad_repository_requests_are_one_line_errors(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    assert run_cli(["export", str(tiny_bundle), "--triton", str(tmp_path / "r"), "--name", "no/slash"]) == 2
    assert "Triton model name 'no/slash'" in capsys.readouterr().err
    assert run_cli(["export", str(tiny_bundle), "--int8", "--triton", str(tmp_path / "r")]) == 2
    assert "export only adds TensorRT engines" in capsys.readouterr().err


def test_a_bundle_with_a_tensorrt_engine_also_gets_a_plan_model(tiny_bundle: Path, tmp_path: Path) -> None:
    """The engine is served as Triton's `tensorrt` backend takes it (`model.plan`), with the same tensors."""
    import shutil

    from sperm_edge.bundle import describe_file
    from sperm_edge.export.triton import write_model_repository

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle_dir)
    (bundle_dir / "model.fp16.engine").write_bytes(b"a serialized TensorRT engine")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"]["model.fp16.engine"] = describe_file(bundle_dir / "model.fp16.engine")
    manifest["engines"] = [{"file": "model.fp16.engine", "precision": "fp16", "max_batch": 16}]
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    folder = write_model_repository(load_bundle(bundle_dir), tmp_path / "repo", TritonOptions(name="scope"))
    plan = tmp_path / "repo" / "scope_trt"
    assert (plan / "1" / "model.plan").read_bytes() == b"a serialized TensorRT engine"
    config = (plan / "config.pbtxt").read_text()
    assert 'name: "scope_trt"' in config and 'backend: "tensorrt"' in config
    assert config.split("input [", 1)[1] == (folder / "config.pbtxt").read_text().split("input [", 1)[1]
    client = load_bundle(plan)  # the plan's folder carries the client bundle too
    assert client.card == load_bundle(bundle_dir).card and client.precisions() == []
