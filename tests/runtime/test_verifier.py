"""The head verifier end to end: trained by `train-verifier`, shipped by `export --verifier`, gating field counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sperm_edge.bundle import Bundle, load_bundle
from sperm_edge.data.synthetic import write_crop_dataset
from sperm_edge.runtime.session import SessionOptions, open_session
from tests.conftest import run_cli
from tests.runtime._bundle import make_checkpoint


@pytest.fixture(scope="module")
def verified_bundle(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("verifier")
    write_crop_dataset(base / "sets" / "hushem", 24, "hushem", seed=1)
    write_crop_dataset(base / "sets" / "smids", 24, "smids", seed=2)
    args = ["train-verifier", "--data", base / "sets", "--out", base / "verifier", "--img-size", 32,
            "--phase1-epochs", 1, "--phase2-epochs", 1, "--fields", 1]  # fmt: skip
    assert run_cli([str(a) for a in args]) == 0
    (base / "run").mkdir()
    make_checkpoint(base / "run" / "best")
    args = ["export", base / "run" / "best", "--out", base / "bundle", "--verifier", base / "verifier"]
    assert run_cli([str(a) for a in args]) == 0
    return base / "bundle"


def _run(bundle: Bundle, clip: Path, out: Path) -> dict:
    with open_session(bundle, str(clip), out, SessionOptions(mode="field", explain="none")) as session:
        session.run()
    return session.report


def test_the_bundle_ships_the_verifier_with_a_threshold_chosen_on_its_validation_split(verified_bundle) -> None:
    bundle = load_bundle(verified_bundle)
    section = bundle.manifest["verifier"]
    assert bundle.file(section["file"]).is_file() and section["file"] in bundle.manifest["files"]
    assert section["classes"] == ["head", "not_head"] and section["input_size"] == 32
    assert section["val"]["head_recall"] >= 0.99 and "validation heads" in section["threshold_rule"]
    kinds = set(section["test"]["rejection_by_kind"])
    assert kinds and kinds <= {"debris", "tail", "fragment", "pair", "glass", "edge", "fielddebris", "fieldpiece",
                               "fieldpart"}  # fmt: skip


def test_every_counted_cell_carries_its_score_and_rejected_ones_are_set_aside(
    verified_bundle, clip: tuple[Path, dict], tmp_path: Path
) -> None:
    path, _ = clip
    bundle = load_bundle(verified_bundle)
    report = _run(bundle, path, tmp_path / "kept")
    events = [json.loads(line) for line in (tmp_path / "kept" / "events.jsonl").read_text().splitlines()[1:]]
    assert events and all(0.0 <= e["verifier"] <= 1.0 for e in events)
    assert report["verifier"]["available"] and report["verifier"]["threshold"] == bundle.manifest["verifier"][
        "threshold"]  # fmt: skip
    # a verifier that trusts nothing sets every cell aside, each with its reason and crop for review
    strict = {**bundle.manifest, "verifier": {**bundle.manifest["verifier"], "threshold": 1.01}}
    report = _run(Bundle(bundle.path, strict), path, tmp_path / "strict")
    aside = [json.loads(line) for line in (tmp_path / "strict" / "set_aside.jsonl").read_text().splitlines()]
    assert report["cells"] == 0 and aside and all(row["reason"] == "not_a_head" and row["crop"] for row in aside)
    assert report["set_aside"]["not_a_head"] == len(aside)
    assert "judged not one sperm head" in (tmp_path / "strict" / "report.md").read_text()


def test_a_bundle_without_a_verifier_says_debris_may_be_counted(tiny_bundle: Path, clip, tmp_path: Path) -> None:
    report = _run(load_bundle(tiny_bundle), clip[0], tmp_path / "out")
    assert not report["verifier"]["available"] and "may be counted" in report["verifier"]["note"]
    assert "may be counted" in (tmp_path / "out" / "report.md").read_text()


def test_bad_verifier_inputs_get_one_clear_line_and_exit_2(tmp_path: Path, capsys, tiny_bundle: Path) -> None:
    missing = ["train-verifier", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "v")]
    assert run_cli(missing) == 2
    err = capsys.readouterr().err
    assert "neither hushem/ nor smids/" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    make_checkpoint(run / "best")
    for verifier, message in ((tmp_path / "empty", "not found"), (run, "is not a head verifier")):
        args = ["export", str(run / "best"), "--out", str(tmp_path / f"bundle-{verifier.name}"), "--verifier",
                str(verifier)]  # fmt: skip
        assert run_cli(args) == 2, verifier
        err = capsys.readouterr().err
        assert message in " ".join(err.split()) and "Traceback" not in err, err
        assert not (tmp_path / f"bundle-{verifier.name}").exists()  # nothing half-written
