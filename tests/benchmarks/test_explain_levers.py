from __future__ import annotations

import json
from pathlib import Path

from tests.benchmarks._scripts import load_script
from tests.conftest import write_tiny_folder


def _row(split: str, method: str, pointing: float, ratio: float) -> dict:
    return {"set": "s", "split": split, "method": method, "layer": "l", "pointing": {"mean": pointing}, "ratio": ratio}


def test_the_choice_is_made_on_validation_rows_nearest_to_both_bars() -> None:
    levers = load_script("explain_levers")
    rows = [
        _row("val", "sharp but off the head", 0.60, 1.9),
        _row("val", "on the head but a blob", 1.00, 0.9),
        _row("val", "nearly both", 0.96, 1.7),
        _row("test", "best on test", 1.00, 2.5),  # never looked at
    ]
    assert levers.choose(rows)["s"]["method"] == "nearly both"


def test_every_method_and_layer_is_scored_on_a_real_run(tmp_path: Path) -> None:
    from sperm_edge.train.config import TrainConfig
    from sperm_edge.train.run import train

    levers = load_script("explain_levers")
    data = write_tiny_folder(tmp_path / "data", per_class=12)
    run = tmp_path / "run"
    train(TrainConfig(data=str(data), out=str(run), phase1_epochs=1, phase2_epochs=1, img_size=64))
    assert levers.main(["--run", f"tiny={run}", "--limit", "6", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "explain_levers.json").read_text())
    combos = {(r["split"], r["method"], r["layer"]) for r in result["rows"]}
    assert len(combos) == 2 * (len(levers.LAYERS) * len(levers.METHODS) + 1)
    for row in result["rows"]:
        assert 0.0 <= row["pointing"]["mean"] <= 1.0 and row["ratio"] > 0 and row["ms_per_cell"] > 0
    assert result["chosen_on_val"]["tiny"]["layer"] in levers.LAYERS
    assert levers.main(["--run", "no-equals-sign"]) == 2
