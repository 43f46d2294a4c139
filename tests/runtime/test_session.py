"""The run session: settings derived from the bundle once, the per-track inference budget, the explainers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.budget import InferenceBudget
from sperm_edge.runtime.session import SessionOptions, open_session, pipeline_config
from sperm_edge.runtime.sources import open_source


def _field_run(bundle, clip: Path, out: Path, **options):
    with open_session(bundle, str(clip), out, SessionOptions(backend="ort-cpu", threads=1, **options)) as session:
        session.run()
    return session


def test_the_budget_counts_the_same_cells_with_fewer_inferences(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    bundle = load_bundle(tiny_bundle)
    bundle.manifest["temperature"] = 0.05  # a sharp softmax: the untrained head's cells settle
    every = _field_run(bundle, clip[0], tmp_path / "every", budget=InferenceBudget("every_frame"))
    budget = _field_run(bundle, clip[0], tmp_path / "budget")
    key = lambda e: (e["track"], e["first_frame"], e["frames_seen"])  # noqa: E731
    assert sorted(map(key, every.outputs.events)) == sorted(map(key, budget.outputs.events))  # counting is the same
    for event in every.outputs.events:  # every sighting before the count was classified
        assert event["inferences"] == event["frames_seen"]
    assert all(1 <= e["inferences"] <= e["frames_seen"] for e in budget.outputs.events)
    assert budget.stats["inferences"] < every.stats["inferences"] == every.stats["cells_seen"]
    assert any(e["inferences"] < e["frames_seen"] for e in budget.outputs.events)  # some cells settled early
    assert budget.report["session"]["budget"]["policy"] == "budget"
    again = _field_run(bundle, clip[0], tmp_path / "again")  # the picks do not depend on thread timing
    same = lambda events: sorted((key(e), e["class"], e["inferences"]) for e in events)  # noqa: E731
    assert same(again.outputs.events) == same(budget.outputs.events)


def test_settings_come_from_the_bundle_and_bad_options_fail_before_anything_opens(drift_bundle, tmp_path) -> None:
    bundle = load_bundle(drift_bundle[0])
    config = pipeline_config(bundle, SessionOptions())
    assert config.set_aside_above == bundle.drift_model().set_aside_threshold and config.drift is not None
    assert config.temperature == bundle.card.temperature and config.rolling_views
    assert pipeline_config(bundle, SessionOptions(set_aside=False)).set_aside_above is None
    assert not pipeline_config(bundle, SessionOptions(tta=True)).rolling_views  # --tta sees all 8 views itself
    every_frame = SessionOptions(budget=InferenceBudget("every_frame"))
    assert pipeline_config(bundle, every_frame).budget.policy == "every_frame"
    with pytest.raises(SpermEdgeError, match="--mode must be one of field, crop, not 'tile'"):
        open_session(bundle, "missing.mp4", tmp_path / "out", SessionOptions(mode="tile"))
    with pytest.raises(SpermEdgeError, match="the inference policy must be one of budget, every_frame"):
        open_session(bundle, "missing.mp4", tmp_path / "out", SessionOptions(budget=InferenceBudget("sometimes")))
    assert not (tmp_path / "out").exists()


def test_explanations_come_from_the_engine_or_a_worker_that_leaves_torch_threads_alone(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    import torch

    from sperm_edge.bundle import load_bundle
    from sperm_edge.explain import GradCamExplainer
    from sperm_edge.runtime.explanations import EngineExplanations
    from sperm_edge.runtime.session import explainers

    loaded = load_bundle(tiny_bundle)
    maps, worker = explainers(loaded, "every", "ort-cpu", tmp_path, 1)
    assert isinstance(maps, EngineExplanations) and maps.mode == "every" and worker is None
    assert explainers(loaded, "none", "ort-cpu", tmp_path, 1) == (None, None)
    loaded.manifest["explain"] = {"engine": False, "reason": "its head is not pool-then-linear"}
    for engine, threads in (("torch", None), ("ort-cpu", 1)):  # `torch` whether named or chosen by auto
        maps, worker = explainers(loaded, "flagged", engine, tmp_path, 1)
        assert maps is None and worker.threads == threads
    before = torch.get_num_threads()
    with GradCamExplainer(loaded.checkpoint_stem()):  # threads=None: the process setting is not touched
        assert torch.get_num_threads() == before


def test_the_run_header_opens_the_log_and_the_report_names_the_run(tiny_bundle: Path, clip, tmp_path: Path) -> None:
    from sperm_edge.io import sha256_file
    from sperm_edge.runtime.events import read_events, read_run_header

    session = _field_run(tiny_bundle, clip[0], tmp_path / "out", max_frames=6, sample_id="S-17", operator="A. Lab")
    log = tmp_path / "out" / "events.jsonl"
    header = read_run_header(log)
    assert log.read_text().splitlines()[0].startswith('{"type":"run"')
    assert header["bundle_sha256"] == sha256_file(Path(tiny_bundle) / "manifest.json")
    assert header["sample_id"] == "S-17" and header["operator"] == "A. Lab" and header["backend"] == "ort-cpu"
    assert session.report["run"] == {k: v for k, v in header.items() if k != "type"}
    assert session.report["status"] == "complete" and session.report["error"] is None
    assert all(e.get("type") != "run" for e in read_events(log)) and len(read_events(log)) == session.report["cells"]


def test_a_failing_run_still_writes_its_report_as_aborted(tiny_bundle: Path, clip, tmp_path: Path) -> None:
    from sperm_edge.localize import find_cells

    calls = {"n": 0}

    def finder_that_fails_on_frame_12(rgb, cfg):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("the frame grabber returned garbage")
        return find_cells(rgb, cfg)

    with pytest.raises(RuntimeError, match="garbage"):
        _field_run(tiny_bundle, clip[0], tmp_path / "out", find=finder_that_fails_on_frame_12)
    import json

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "aborted" and "RuntimeError: the frame grabber returned garbage" in report["error"]
    assert "Status: **aborted**" in (tmp_path / "out" / "report.md").read_text()


def test_a_stopped_run_says_so_and_report_rebuilds_it_from_the_log(tiny_bundle: Path, clip, tmp_path: Path) -> None:
    import json

    from tests.conftest import run_cli

    out = tmp_path / "out"
    options = SessionOptions(backend="ort-cpu", threads=1)
    with open_session(tiny_bundle, str(clip[0]), out, options) as session:
        results = []  # counted here: the pipeline's own frame count moves on another thread meanwhile
        session.run(lambda result: results.append(result) or (session.stop() if len(results) == 8 else None))
    assert session.report["status"] == "stopped"
    (out / "report.json").unlink()  # as after a SIGKILL: the log is all there is
    (out / "report.md").unlink()
    assert run_cli(["report", str(out)]) == 0
    rebuilt = json.loads((out / "report.json").read_text())
    assert rebuilt["status"] == "aborted" and "without writing its report" in rebuilt["error"]
    assert rebuilt["cells"] == session.report["cells"] and rebuilt["counts"] == session.report["counts"]
    assert rebuilt["run"] == session.report["run"] and (out / "report.md").is_file()
    assert run_cli(["report", str(tmp_path / "nothing")]) == 2


def test_a_frame_with_more_cells_than_the_engine_takes_is_split(tiny_bundle: Path, clip, tmp_path: Path) -> None:
    """A TensorRT engine's profile caps its batch (16 by default): the pipeline splits by the engine's limit."""
    from dataclasses import replace

    from sperm_edge.engines import OrtBackend
    from sperm_edge.runtime.outputs import RunOutputs, stream
    from sperm_edge.runtime.pipeline import Pipeline
    from sperm_edge.runtime.sources import open_source

    class TwoAtATime(OrtBackend):  # ONNX Runtime, with the batch limit an engine profile would set
        def _activate_impl(self):
            return replace(super()._activate_impl(), max_batch=2)

    bundle = load_bundle(tiny_bundle)
    config = pipeline_config(bundle, SessionOptions(budget=InferenceBudget("every_frame")))
    engine = TwoAtATime(bundle.onnx_path("fp32"), threads=1)
    with open_source(str(clip[0])) as source, engine, RunOutputs(tmp_path / "out") as outputs:
        with Pipeline(source, engine, bundle.card.classes, bundle.card.preprocess, config) as pipeline:
            stream(pipeline, outputs)  # Backend.infer refuses a batch over the engine's maximum
            assert pipeline.batch_limit == 2
    assert pipeline.inferences == pipeline.cells_seen > 2 * pipeline.frames and outputs.count > 0


@pytest.mark.slow
def test_a_stream_server_that_dies_for_good_fails_the_run_for_a_restart(tiny_bundle: Path, tmp_path: Path) -> None:
    """The service's restart path: the live source gives up, the report says aborted, the exit status is 75."""
    import json
    import threading

    from sperm_edge.runtime.sources import SourceOptions
    from tests.conftest import run_cli
    from tests.runtime._stream_server import StreamServer

    with StreamServer() as server:
        threading.Timer(3.0, server.kill).start()  # and it never comes back
        args = ["run", str(tiny_bundle), "--source", server.url, "--backend", "ort-cpu", "--mode", "crop",
                "--headless", "--out", str(tmp_path / "out"), "--stall-timeout", "1", "--reconnect-attempts", "2",
                "--reconnect-interval", "0.1"]  # fmt: skip
        assert run_cli(args) == 75
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "aborted" and "gave up" in report["error"] and report["frames"] > 0
    assert SourceOptions().reopen_attempts == 5  # the library default; the CLI's 0 means forever (-1)


def test_a_bundle_whose_model_and_classes_disagree_is_refused_before_the_run(tiny_bundle: Path, clip, tmp_path) -> None:
    bundle = load_bundle(tiny_bundle)
    bundle.manifest["classes"] = [*bundle.card.classes, "05_Extra"]
    with pytest.raises(SpermEdgeError, match="gives 4 class scores but the manifest names 5 classes"):
        _field_run(bundle, clip[0], tmp_path / "out")


def test_stop_ends_a_run_whose_engine_call_never_returns(tiny_bundle: Path, clip, tmp_path: Path) -> None:
    """A wedged engine: stop() still ends the run within its deadline, as a failure."""
    import threading
    import time

    from sperm_edge.engines import OrtBackend
    from sperm_edge.runtime.outputs import RunOutputs, stream
    from sperm_edge.runtime.pipeline import Pipeline

    release = threading.Event()

    class Wedges(OrtBackend):  # ONNX Runtime whose sixth call blocks until released
        calls = 0

        def _infer_impl(self, batch):
            Wedges.calls += 1
            if Wedges.calls == 6:
                release.wait(timeout=60)
            return super()._infer_impl(batch)

    bundle = load_bundle(tiny_bundle)
    config = pipeline_config(bundle, SessionOptions(budget=InferenceBudget("every_frame")))
    config.stop_timeout, config.join_timeout = 1.0, 0.5
    engine = Wedges(bundle.onnx_path("fp32"), threads=1)
    try:
        with open_source(str(clip[0])) as source, engine, RunOutputs(tmp_path / "out") as outputs:
            with Pipeline(source, engine, bundle.card.classes, bundle.card.preprocess, config) as pipeline:
                threading.Timer(2.0, pipeline.stop).start()  # systemctl stop, while the engine is wedged
                start = time.monotonic()
                with pytest.raises(SpermEdgeError, match="did not end within 1 s of being stopped: .*inference"):
                    stream(pipeline, outputs)
        assert time.monotonic() - start < 2.0 + 1.0 + 1.0  # stopped at 2 s, failed 1 s later, not after 60
    finally:
        release.set()
    assert pipeline.stats()["frames"] == 5  # the frames before the wedged call were finished
