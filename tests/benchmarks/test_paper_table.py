"""The paper-table script: recipe choice by validation only, rows from fold folders, lossless packing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks._scripts import BENCHMARKS, load_script

REQUIRED = {"dataset", "arch", "precision", "folds", "accuracy_mean", "accuracy_std", "macro_f1_mean"}
REQUIRED |= {"macro_f1_std", "per_class_f1", "img_size", "seconds"}


@pytest.fixture(scope="module")
def paper_table():
    return load_script("paper_table")


def _fold(run: Path, fold: int, test_acc: float, val_f1: float, device: str = "cpu: test") -> None:
    folder = run / f"fold-{fold}"
    folder.mkdir(parents=True)
    per_class = {c: {"f1": test_acc} for c in ("a", "b")}
    metrics = {"accuracy": test_acc, "macro_f1": test_acc, "classes": ["a", "b"], "per_class": per_class}
    (folder / "metrics.json").write_text(json.dumps({**metrics, "train_seconds": 2.0, "train_device": device}))
    history = [{"val_macro_f1": val_f1 - 0.1}, {"val_macro_f1": val_f1}]
    (folder / "history.json").write_text(json.dumps(history))


def test_the_recipe_with_better_validation_wins_even_when_its_test_folds_are_worse(paper_table, tmp_path) -> None:
    first, second = list(paper_table.RECIPES["hushem"])[:2]
    arch = "cbam_efficientnet_lite0"
    for fold in range(1, 6):
        _fold(paper_table.run_dir(tmp_path, "hushem", arch, first), fold, test_acc=0.95, val_f1=0.80)
        _fold(paper_table.run_dir(tmp_path, "hushem", arch, second), fold, test_acc=0.90 + fold / 100, val_f1=0.90)
    int8 = tmp_path / "int8"
    int8.mkdir()
    for fold, int8_acc, gate in ((1, 0.9, {"passed": True}), (2, 0.88, None)):  # fold 2: before the gate's record
        score = {"accuracy": 0.9, "macro_f1": 0.9, "top1_agreement_fp32": 1.0}
        result = {"fp32": score, "int8": {**score, "accuracy": int8_acc}, "keep_float": ["*conv_stem*"], "seconds": 1.0}
        (int8 / f"hushem-{arch}-{second}-fold-{fold}.json").write_text(json.dumps(result | {"gate": gate}))

    rows = paper_table.table_rows(tmp_path, ["hushem"], [arch], 5, b0_pretrained=False)
    fp32, int8_row = rows
    assert REQUIRED <= set(fp32) and REQUIRED <= set(int8_row)
    assert fp32["recipe_name"] == second and fp32["folds"] == 5
    assert fp32["accuracy_mean"] == pytest.approx(0.93) and fp32["accuracy_std"] == pytest.approx(0.0158, abs=1e-4)
    assert fp32["recipe_selection"][first]["val_macro_f1_mean"] == pytest.approx(0.80)
    assert fp32["trained_on"] == {"cpu: test": 5} and fp32["per_class_f1"]["a"] == pytest.approx(0.93)
    assert int8_row["precision"] == "int8" and int8_row["folds"] == 2 and int8_row["keep_float"] == ["*conv_stem*"]
    assert "| hushem | cbam_efficientnet_lite0 | fp32 | 5 | 0.930 ± 0.016 |" in paper_table.markdown(rows)
    assert (
        "- HuSHeM, `cbam_efficientnet_lite0`: INT8 against FP32 -1.0 points on average, -2.0 on its worst fold "
        "(fold 2); the validation gate passed it on 1 of 1 folds" in paper_table.readme_section(rows)
    )


def test_a_recipe_with_every_fold_beats_a_better_one_with_fewer(paper_table, tmp_path) -> None:
    first, second = list(paper_table.RECIPES["smids"])[:2]
    arch = "efficientnet_lite0"
    for fold in range(1, 6):
        _fold(paper_table.run_dir(tmp_path, "smids", arch, first), fold, test_acc=0.8, val_f1=0.8)
    _fold(paper_table.run_dir(tmp_path, "smids", arch, second), 1, test_acc=0.9, val_f1=0.95)
    assert paper_table.choose_recipe(tmp_path, "smids", arch, 5)[0] == first


def test_a_run_that_keeps_its_final_weights_is_chosen_on_their_validation_score(paper_table, tmp_path) -> None:
    """Not on the best epoch's score in its history, which the run did not keep."""
    run = paper_table.run_dir(tmp_path, "hushem", "cbam_efficientnet_lite0", "224-lr5e-4-mixup-ema-last")
    for fold in range(1, 3):
        _fold(run, fold, test_acc=0.9, val_f1=0.99)
        metrics = json.loads((run / f"fold-{fold}" / "metrics.json").read_text())
        scores = {"val": {"accuracy": 0.8, "macro_f1": 0.7 + fold / 100}, "test": {"accuracy": 0.9, "macro_f1": 0.9}}
        metrics |= {"kept": "ema-last", "candidates": {"ema-last": scores, "raw-last": scores}}
        (run / f"fold-{fold}" / "metrics.json").write_text(json.dumps(metrics))
    assert paper_table.best_val_f1(run / "fold-1") == pytest.approx(0.71)
    row = paper_table.fp32_row(tmp_path, "hushem", "cbam_efficientnet_lite0", "224-lr5e-4-mixup-ema-last", {}, False)
    assert row["kept"] == "ema-last" and row["seconds_per_fold"] == [2.0, 2.0]
    assert row["candidates"]["raw-last"]["val"]["accuracy_per_fold"] == [0.8, 0.8]
    assert "| ema-last | 0.800 |" in "\n".join(paper_table._candidate_lines({**row, "folds": 2}))


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("paper_table.py", ["--pick", "hushem-cbam=x", "--table-only", "--out", "{tmp}/o"], "DATASET/ARCH=RECIPE"),
        ("paper_table.py", ["--pick", "smids/simple_cnn=nope", "--table-only", "--out", "{tmp}/o"], "no recipe"),
        (
            "paper_table.py",
            ["--pick", "hushem/simple_cnn=224-lr5e-4-mixup-ema-last-kd-lite1", "--table-only", "--out", "{tmp}/o"],
            "is for the Lite0 architectures",
        ),
        ("keep_float.py", ["--runs", "{tmp}/missing", "--out", "{tmp}/o"], "checkpoint file not found"),
        ("arch_latency.py", ["--configs", "cbam_efficientnet_lite1", "--out", "{tmp}/a.json"], "ARCH@PIXELS"),
        ("arch_latency.py", ["--configs", "resnet9@64", "--out", "{tmp}/a.json"], "unknown architecture 'resnet9'"),
        ("crosslab.py", ["--hushem", "{tmp}/h", "--smids", "{tmp}/s", "--data-root", "{tmp}/none"], "not found"),
        ("crop_agreement.py", ["{tmp}/no-bundle", "--out", "{tmp}/r.json"], "crop_agreement.py: "),
        ("field_speed.py", ["--out", "{tmp}/o"], "give --hushem-bundle, --smids-bundle or both"),
        ("field_speed.py", ["--hushem-bundle", "{tmp}/no-bundle", "--out", "{tmp}/o"], "bundle folder not found"),
    ],
)
def test_scripts_refuse_bad_input_in_one_line(script, args, message, tmp_path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_lite1_can_be_picked_and_is_compared_with_its_twin(paper_table, tmp_path) -> None:
    """The Lite1 pair: --pick accepts it, INT8 and the README name it, CBAM is set beside its own twin."""
    recipe = "224-lr5e-4-mixup-ema-last"
    pair = ("cbam_efficientnet_lite1", "efficientnet_lite1")
    assert set(pair) <= set(paper_table.INT8_ARCHS) and pair in paper_table.CBAM_TWINS
    for arch, acc in zip(pair, (0.95, 0.90), strict=True):
        for fold in range(1, 6):
            _fold(paper_table.run_dir(tmp_path / "runs", "hushem", arch, recipe), fold, test_acc=acc, val_f1=0.9)
    picks = [f"hushem/{arch}={recipe}" for arch in pair]
    args = ["--pick", *picks, "--archs", *pair, "--datasets", "hushem", "--table-only"]
    args += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, str(BENCHMARKS / "paper_table.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "o" / "paper_table.json").read_text())
    assert [(r["arch"], r["recipe_name"], r["recipe_picked"]) for r in rows] == [(a, recipe, True) for a in pair]
    section = paper_table.readme_section(rows)
    assert "| `efficientnet_lite1` (no CBAM) | 0.900 ± 0.000 |" in section
    assert (
        "- `cbam_efficientnet_lite1` against its no-CBAM twin on HuSHeM: +5.0 points, ahead on 5 of 5 folds" in section
    )


def test_the_readme_results_are_the_committed_table_rendered(paper_table) -> None:
    """No figure of the README's results section is typed by hand: it is paper_table.json rendered."""
    rows = json.loads((BENCHMARKS / "results" / "paper_table.json").read_text())
    readme = (BENCHMARKS.parent / "README.md").read_text()
    section = readme.split(paper_table.README_START, 1)[1].split(paper_table.README_END, 1)[0]
    assert section.strip() == paper_table.readme_section(rows).strip()
    for row in rows:  # the interface the acceptance checks read
        assert len(row["accuracy_per_fold"]) == row["folds"] and isinstance(row["tta"], bool)


def test_keep_float_rule_takes_the_fewest_float_layers_that_pass_on_validation() -> None:
    keep_float = load_script("keep_float")

    def row(candidate: str, drop: float, agreement: float, test_drop: float = 0.0) -> dict:
        return {"candidate": candidate, "val": {"drop_points": drop, "agreement": agreement},
                "test": {"drop_points": test_drop}}  # fmt: skip

    rows = [row("none", 5.0, 0.9), row("stem", 0.0, 0.99, test_drop=9.0), row("stem+block0", 0.0, 1.0)]
    assert keep_float.choose(rows) == "stem"  # test figures never enter the choice
    assert keep_float.choose([row("none", 0.0, 0.96)]) is None


def test_a_distilled_recipe_trains_only_when_picked_with_its_teacher_run_under_runs(paper_table, monkeypatch) -> None:
    kd = "224-lr5e-4-mixup-ema-last-kd-lite1"
    teacher = paper_table.RECIPES["hushem"][kd]["teacher"]
    assert teacher[1] in paper_table.RECIPES["hushem"]
    pairs = (("cbam_efficientnet_lite0", "cbam_efficientnet_lite1"), ("efficientnet_lite0", "efficientnet_lite1"))
    for student, arch in pairs:
        run = paper_table.teacher_run(Path("runs"), "hushem", student, teacher)
        assert run == paper_table.run_dir(Path("runs"), "hushem", arch, teacher[1]) and arch in paper_table.ARCHS
    assert kd not in paper_table.recipe_names("hushem", "cbam_efficientnet_lite0")  # its teacher may not exist yet
    monkeypatch.setitem(paper_table.PICKS, ("hushem", "cbam_efficientnet_lite0"), kd)
    assert paper_table.recipe_names("hushem", "cbam_efficientnet_lite0") == [kd]
