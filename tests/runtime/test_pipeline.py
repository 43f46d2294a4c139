from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from sperm_edge.bundle import load_bundle
from sperm_edge.engines import open_backend
from sperm_edge.explain.worker import ExplainJob, ExplainWorker
from sperm_edge.runtime.events import read_events
from sperm_edge.runtime.flagging import FlagPolicy
from sperm_edge.runtime.outputs import RunOutputs, stream
from sperm_edge.runtime.pipeline import STAGES, Pipeline, PipelineConfig
from sperm_edge.runtime.scoring import score_events
from sperm_edge.runtime.session import SessionOptions, open_session
from sperm_edge.runtime.sources import open_source


def _run(bundle_path: Path, source: str | Path, out: Path, temperature: float | None = None, **options) -> tuple:
    """A run through the session `sperm-edge run` opens (ONNX Runtime CPU); `temperature` replaces the bundle's."""
    bundle = load_bundle(bundle_path)
    if temperature is not None:
        bundle.manifest["temperature"] = temperature
    with open_session(bundle, str(source), out, SessionOptions(backend="ort-cpu", **options)) as session:
        session.run()
    return session.outputs, session.stats


def test_field_mode_counts_each_cell_of_the_clip_once(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    path, truth = clip
    outputs, stats = _run(tiny_bundle, path, tmp_path / "out")
    events = read_events(tmp_path / "out" / "events.jsonl")
    assert events == outputs.events and stats["frames"] == len(truth["frames"])
    score = score_events(events, truth)
    assert score["recall"] >= 0.9 and score["double_counts"] == 0, score
    assert {"frame", "box", "class", "probs", "flagged", "track", "time"} <= set(events[0])
    assert len({e["track"] for e in events}) == len(events)
    assert stats["fps"] > 0 and all(stats["stages_ms"][s]["n"] > 0 for s in STAGES)
    flagged = [e for e in events if e["flagged"]]
    for event in flagged:
        assert (tmp_path / "out" / event["crop"]).is_file() and (tmp_path / "out" / event["frame_image"]).is_file()


def test_the_bundle_temperature_scales_every_confidence(tiny_bundle: Path, tmp_path: Path) -> None:
    from tests.runtime._bundle import make_crops

    crops = make_crops(tmp_path / "crops", n=6, seed=2)
    events = {}
    for t in (1.0, 3.0):
        outputs, _ = _run(tiny_bundle, crops, tmp_path / f"out-{t}", temperature=t, mode="crop")
        events[t] = sorted(outputs.events, key=lambda e: e["name"])
    for plain, scaled in zip(events[1.0], events[3.0], strict=True):
        assert plain["class"] == scaled["class"]  # calibration never changes a prediction
        logp = np.log([plain["probs"][c] for c in sorted(plain["probs"])])
        expected = np.exp(logp / 3.0) / np.exp(logp / 3.0).sum()  # softmax(z / T) from softmax(z)
        got = [scaled["probs"][c] for c in sorted(scaled["probs"])]
        assert np.allclose(got, expected, atol=2e-4)


def test_crop_mode_classifies_each_image_as_one_cell(tiny_bundle: Path, tmp_path: Path) -> None:
    from tests.runtime._bundle import make_crops

    crops = make_crops(tmp_path / "crops", n=8, seed=1)
    outputs, stats = _run(tiny_bundle, crops, tmp_path / "out", mode="crop", batch=4)
    names = sorted(e["name"] for e in outputs.events)
    assert len(names) == 8 and names[0] == "01_Normal/synth_00000.png"
    assert all(e["box"] == [0, 0, 131, 131] and e["frames_seen"] == 1 for e in outputs.events)
    assert stats["frames"] == 8 and stats["stages_ms"]["tracking"]["n"] == 0  # crop mode tracks nothing


def test_the_explain_worker_does_not_hold_up_the_stream(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    release, stuck = threading.Event(), threading.Event()

    def hang(job: ExplainJob) -> None:  # the first explanation takes "forever"
        if not stuck.is_set():
            stuck.set()
            release.wait(timeout=120)

    out = tmp_path / "out"
    worker = ExplainWorker(load_bundle(tiny_bundle).checkpoint_stem(), out / "explanations", before_job=hang)
    with worker:
        try:
            assert worker.submit(ExplainJob("first", np.zeros((40, 40, 3), np.uint8)))
            assert stuck.wait(timeout=120)
            bundle = load_bundle(tiny_bundle)
            with (
                open_source(clip[0]) as src,
                open_backend(bundle, "ort-cpu") as backend,
                RunOutputs(out, worker) as outputs,
                Pipeline(src, backend, bundle.card.classes, bundle.card.preprocess, PipelineConfig()) as pipeline,
            ):
                stream(pipeline, outputs)
                stats = pipeline.stats()
            # the whole clip went through while the worker was stuck on its first job
            assert stats["frames"] == len(clip[1]["frames"])
            assert worker.done == [] and outputs.submitted >= 1
        finally:
            release.set()
    assert len(worker.done) == outputs.submitted + 1
    written = sorted(p.name for p in (out / "explanations").glob("0*"))
    assert len(written) == 2 * outputs.submitted and written[0].endswith(".json")


def test_a_live_source_ends_cleanly_after_max_frames(
    tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    from sperm_edge.runtime.sources import SourceOptions

    options = SessionOptions(backend="ort-cpu", max_frames=6, source=SourceOptions(live=True, latest_only=True))
    with open_session(tiny_bundle, str(clip[0]), tmp_path / "out", options) as session:
        session.run()
    assert 1 <= session.pipeline.frames <= 6 and session.source.stats.delivered >= session.pipeline.frames
    assert (tmp_path / "out" / "events.jsonl").is_file()


def test_annotated_frames_show_boxes(tiny_bundle: Path, clip: tuple[Path, dict], tmp_path: Path) -> None:
    from sperm_edge.runtime.annotate import VideoFileOutput, draw
    from sperm_edge.runtime.pipeline import CellResult

    frame = np.full((120, 160, 3), 200, np.uint8)
    image = draw(frame, [CellResult((10, 10, 50, 60), "02_Tapered", 0.91, 3, True)], fps=12.5)
    assert image.shape == frame.shape and (image != frame).any() and (frame == 200).all()
    with VideoFileOutput(tmp_path / "a.mp4", 10.0) as video:
        for _ in range(3):
            video.write(image)
    assert cv2.VideoCapture(str(tmp_path / "a.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3


def test_a_read_stuck_in_the_driver_does_not_hang_shutdown(tiny_bundle: Path, numbered_video: Path) -> None:
    """A file read that never returns: the pipeline and the source still close within their deadlines."""
    import time

    from sperm_edge.runtime.sources import CaptureSource, SourceOptions, parse_uri
    from tests.runtime.test_sources_stall import Wedged

    bundle = load_bundle(tiny_bundle)
    wedged: list[Wedged] = []

    def opener(uri, options):
        wedged.append(Wedged(Path(uri.location), 3))
        return wedged[-1]

    source = CaptureSource(parse_uri(numbered_video), SourceOptions(), opener=opener)
    config = PipelineConfig(mode="crop", join_timeout=1.0)
    with open_backend(bundle, "ort-cpu") as backend, source:
        pipeline = Pipeline(source, backend, bundle.card.classes, bundle.card.preprocess, config).__enter__()
        results = iter(pipeline)
        assert [next(results).frame.index for _ in range(3)] == [0, 1, 2]
        time.sleep(0.2)  # the capture thread is now blocked inside read()
        start = time.monotonic()
        pipeline.__exit__(None, None, None)
        source.close()
        took = time.monotonic() - start
    assert took < 1.0 + 1.0 + 1.5, took  # pipeline deadline + the source's wait, not forever
    assert wedged[0].reading and not wedged[0].released
    wedged[0].gate.set()
    deadline = time.monotonic() + 3
    while not wedged[0].released and time.monotonic() < deadline:
        time.sleep(0.02)
    assert wedged[0].released and not wedged[0].released_during_read


def test_field_mode_paints_neighbours_out_of_the_crops_unless_told_not_to(tiny_bundle: Path, tmp_path: Path) -> None:
    from tests.test_localize import two_heads

    still = tmp_path / "two heads.png"
    cv2.imwrite(str(still), two_heads(gap=44)[..., ::-1])
    runs = {
        isolate: sorted(
            _run(tiny_bundle, still, tmp_path / f"out-{isolate}", isolate=isolate)[0].events,
            key=lambda e: e["box"],
        )
        for isolate in (True, False)
    }
    assert len(runs[True]) == 2 and [e["box"] for e in runs[True]] == [e["box"] for e in runs[False]]
    for alone, crowded in zip(runs[True], runs[False], strict=True):  # the network saw other crops
        assert max(abs(alone["probs"][c] - crowded["probs"][c]) for c in alone["probs"]) > 1e-4


def test_rolling_views_turn_each_frames_crops_and_turn_their_cam_back(
    tiny_bundle: Path, clip: tuple[Path, dict]
) -> None:
    from sperm_edge.preprocess import preprocess_batch
    from sperm_edge.tta import VIEWS, dihedral_view, undo_dihedral_view

    bundle = load_bundle(tiny_bundle)
    policy = FlagPolicy.for_classes(bundle.card.abnormal_classes)
    config = PipelineConfig(mode="field", rolling_views=True, max_frames=VIEWS + 1)
    with open_source(clip[0]) as src, open_backend(bundle, "ort-cpu") as backend:
        with Pipeline(src, backend, bundle.card.classes, bundle.card.preprocess, config, policy) as pipeline:
            results = [r for r in pipeline if r.frame is not None]
        assert len(results) == VIEWS + 1
        for result in results:
            view = result.frame.index % VIEWS
            cells = [c for c in result.cells][:2]
            assert cells and all(c.cam is not None for c in cells)
            batch = dihedral_view(preprocess_batch([c.crop for c in cells], bundle.card.preprocess), view)
            expected = backend.infer(np.ascontiguousarray(batch))
            for cell, probs, cam in zip(cells, expected.logits, expected.cam, strict=True):
                label = bundle.card.classes.index(cell.label)
                assert label == int(np.argmax(probs))  # the network saw the crop in the frame's view ...
                np.testing.assert_allclose(
                    cell.cam, undo_dihedral_view(cam, view)[label], atol=1e-5
                )  # ... cam unturned
