from __future__ import annotations

import subprocess
import sys

import numpy as np

from sperm_edge.data.folder import load_image_folder
from sperm_edge.data.splits import group_ids
from sperm_edge.train.config import TrainConfig
from sperm_edge.train.run import train
from tests.benchmarks._scripts import load_script

crosslab = load_script("crosslab")


def test_the_share_set_apart_for_choosing_is_whole_twin_groups_and_the_same_every_run(tiny_folder) -> None:
    data = load_image_folder(tiny_folder)
    share = crosslab.dev_share(data, "smids")
    assert np.array_equal(share, crosslab.dev_share(data, "smids"))
    assert abs(share.mean() - crosslab.DEV_SHARE["smids"]) < 0.1
    groups = group_ids(data.pixel_hashes)
    assert not set(groups[share]) & set(groups[~share])
    assert not crosslab.dev_share(data, "hushem").any()  # nothing is chosen on HuSHeM's crops


def test_a_model_split_anywhere_in_its_backbone_gives_the_same_logits(tiny_folder, tmp_path) -> None:
    cfg = TrainConfig(data=str(tiny_folder), out=str(tmp_path / "run"), arch="cbam_efficientnet_lite0",
                      phase1_epochs=1, phase2_epochs=1, img_size=32, batch_size=8, pretrained=False)  # fmt: skip
    train(cfg)
    model = crosslab.Model(tmp_path / "run")
    images = load_image_folder(tiny_folder).images[:5]
    whole = crosslab.Model.logits(model.model, model.maps(images))
    for stages in (1, 2):
        split = crosslab.Model.logits(model.model, model.maps(images, stages), stages)
        assert np.allclose(split, whole, atol=2e-2)  # the maps are cached in float16


def test_only_a_finished_schedule_is_chosen_and_the_table_says_which_are_unfinished() -> None:
    rows = [
        {"schedule": name, "k": k, "draw": draw, "seconds": 2.0, "balanced_accuracy": score}
        for name, score in (("frozen", 0.80), ("stage1-batch64", 0.85))
        for k in crosslab.KS
        for draw in range(2)
    ]
    rows.append({"schedule": "stage2-batch64", "k": 5, "draw": 0, "seconds": 9.0, "balanced_accuracy": 0.99})
    result = crosslab.selection_result(rows, draws=2, share_crops=10)
    assert result["chosen"] == "stage1-batch64" and result["means"]["stage1-batch64"]["k20"] == 0.85
    text = crosslab.select_markdown(result, "python benchmarks/crosslab.py --select")
    assert "Chosen: `stage1-batch64`." in text
    assert "| stage2-batch64 (unfinished) | stages=2, batch_size=64 | 0.990 | - | - |" in text
    assert crosslab.selection_result(rows[-1:], draws=2, share_crops=10)["chosen"] is None


def test_the_cross_lab_rows_without_a_smids_run_are_a_usage_error(tmp_path) -> None:
    script = str(crosslab.__file__)
    done = subprocess.run([sys.executable, script, "--hushem", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "--smids is needed (unless --select)" in done.stderr
    assert "Traceback" not in done.stderr
