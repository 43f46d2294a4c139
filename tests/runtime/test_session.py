"""The run session: settings derived from the bundle once, the per-track inference budget, the explainers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sperm_edge.bundle import load_bundle
from sperm_edge.errors import SpermEdgeError
from sperm_edge.runtime.budget import InferenceBudget
from sperm_edge.runtime.session import SessionOptions, open_session, pipeline_config


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
    assert config.temperature == bundle.temperature and config.rolling_views
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
