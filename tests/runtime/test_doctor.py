"""`sperm-edge doctor` on this machine and on a Jetson laid out as files under a fake root.

The fake root holds what JetPack 6.1 puts on an Orin Nano (the L4T release file, the device tree,
CUDA's version.json, cuDNN's header, TensorRT's library, the Argus GStreamer plugin, a camera);
the code under test reads it exactly as it reads `/`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sperm_edge import hardware
from tests.conftest import BLOCK_TORCH, run_cli

REPO = Path(__file__).resolve().parents[2]
TEGRA = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 2024\n"


def _write(root: Path, relative: str, text: str = "") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def orin(tmp_path: Path) -> Path:
    root = tmp_path / "orin"
    _write(root, "etc/nv_tegra_release", TEGRA)
    _write(root, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00")
    _write(
        root,
        "proc/device-tree/compatible",
        "nvidia,p3768-0000+p3767-0005-super\x00nvidia,p3767-0005\x00nvidia,tegra234\x00",
    )
    _write(root, "usr/local/cuda/version.json", json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}))
    _write(
        root,
        "usr/include/cudnn_version.h",
        "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 3\n#define CUDNN_PATCHLEVEL 0\n",
    )
    for lib in ("libnvinfer.so", "libnvinfer.so.10", "libnvinfer.so.10.3.0"):
        _write(root, f"usr/lib/aarch64-linux-gnu/{lib}")
    _write(root, "usr/lib/aarch64-linux-gnu/gstreamer-1.0/libgstnvarguscamerasrc.so")
    _write(root, "dev/video0")
    _write(root, "dev/video10")
    _write(root, "sys/class/video4linux/video0/name", "HD USB Camera\n")
    return root


def test_a_jetson_is_recognised_from_its_files(orin: Path) -> None:
    board = hardware.jetson(orin)
    assert board == {
        "model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
        "soc": "tegra234",
        "l4t": "36.4.0",
        "jetpack": "6.1",
        "compute_capability": "8.7",
    }
    assert hardware.cuda_version(orin) == "12.6.68" and hardware.cudnn_version(orin) == "9.3.0"
    assert hardware.tensorrt_library_version(orin) == "10.3.0"
    assert hardware.gstreamer_plugin(orin, "nvarguscamerasrc")
    assert hardware.cameras(orin) == [
        {"device": "/dev/video0", "name": "HD USB Camera"},
        {"device": "/dev/video10", "name": None},
    ]
    assert hardware.jetson(orin.parent / "not-a-jetson") is None
    assert hardware.jetpack_for("36.4.3") == "6.2" and hardware.jetpack_for("35.4.1") == "5.1.2"


def _stale_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    """The tiny bundle with an engine in its manifest built for TensorRT 8.6 (an older JetPack)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["engines"] = [{"file": "model.fp16.trt8.6.2.sm87.engine", "precision": "fp16", "tensorrt": "8.6.2",
                            "compute_capability": "8.7", "max_batch": 16}]  # fmt: skip
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_doctor_json_on_a_jetson_names_each_missing_piece_and_its_fix(orin, tiny_bundle, tmp_path, capsys) -> None:
    bundle = _stale_bundle(tiny_bundle, tmp_path)
    code = run_cli(["doctor", "--json", "--bundle", str(bundle), "--root", str(orin)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0  # ONNX Runtime on the CPU runs the bundle
    assert {"python", "platform", "onnxruntime", "tensorrt", "cuda", "cameras", "bundle", "fixes"} <= set(report)
    assert report["platform"]["jetson"]["jetpack"] == "6.1"
    assert report["tensorrt"] == {"version": "10.3.0", "python": False}
    assert report["cuda"] == {"version": "12.6.68", "cudnn": "9.3.0"}
    assert "CPUExecutionProvider" in report["onnxruntime"]["providers"] and report["onnxruntime"]["version"]
    assert [c["device"] for c in report["cameras"] if c["sdk"] == "v4l2"] == ["/dev/video0", "/dev/video10"]
    assert report["gpus"] == [{"name": report["platform"]["jetson"]["model"], "compute_capability": "8.7"}]
    engine = report["bundle"]["engines"][0]
    assert not engine["matches"] and "built with TensorRT 8.6.2, this machine has 10.3.0" in engine["reason"]
    assert report["bundle"]["auto_backend"] == "ort-cpu" and report["bundle"]["auto_reason"]
    fixes = {f["missing"]: f["fix"] for f in report["fixes"]}
    assert "python3-libnvinfer" in fixes["TensorRT's Python module (the trt backend)"]
    assert fixes["a TensorRT engine built on this machine"] == (
        f"sperm-edge export {bundle} --out {bundle.parent / 'bundle-trt'} --trt [--fp16]"
    )
    assert "onnxruntime-gpu" in fixes["ONNX Runtime's GPU providers (ort-cuda, ort-trt)"]
    assert report["ok"] is True


def test_doctor_tables_and_no_jetson_here(tiny_bundle, capsys) -> None:
    assert run_cli(["doctor", "--bundle", str(tiny_bundle)]) == 0
    text = capsys.readouterr().out
    assert "--backend auto: ort-cpu fp32" in text and "onnxruntime" in text and "ready" in text


def test_doctor_exits_1_when_nothing_can_run_the_bundle(tiny_bundle, tmp_path) -> None:
    script = BLOCK_TORCH + (
        "sys.modules['onnxruntime'] = None\n"  # neither engine installed
        "from sperm_edge.cli import main; main(sys.argv[1:])"
    )
    args = [sys.executable, "-c", script, "doctor", "--json", "--bundle", str(tiny_bundle), "--root", str(tmp_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["bundle"]["auto_backend"] is None
    assert report["onnxruntime"] == {"version": None, "providers": []}
    assert any(f["fix"] == 'pip install "sperm-edge[runtime]"' for f in report["fixes"])
