from __future__ import annotations

import torch

from sperm_edge.data.folder import load_image_folder
from sperm_edge.model.checkpoint import load_checkpoint
from sperm_edge.train.adapt import adapt_model, sample_shots
from sperm_edge.train.config import AdaptConfig, TrainConfig
from sperm_edge.train.run import train
from tests.conftest import run_cli, write_tiny_folder


def _source(tiny_folder, out, arch: str = "cbam_efficientnet_lite0"):
    cfg = TrainConfig(data=str(tiny_folder), out=str(out), arch=arch, phase1_epochs=1, phase2_epochs=1,
                      img_size=32, batch_size=8, pretrained=False)  # fmt: skip
    train(cfg)
    return load_checkpoint(out)


def test_adapting_the_last_stage_trains_it_and_keeps_the_rest_of_the_backbone(tiny_folder, tmp_path) -> None:
    ckpt = _source(tiny_folder, tmp_path / "source")
    lab = load_image_folder(write_tiny_folder(tmp_path / "lab b", classes=("normal", "odd"), per_class=10, seed=3))
    shots, _ = sample_shots(lab, 4, seed=0)
    cfg = AdaptConfig(per_class=4, steps=6, views=2, stages=1, batch_size=5)
    model, temperature = adapt_model(ckpt, lab, shots, cfg)
    assert temperature > 0 and model.head[-1].out_features == 2
    before = ckpt.state_dict
    after = model.state_dict()
    tail = ("backbone.blocks.6.", "backbone.conv_head.", "backbone.bn2.")
    for key, value in after.items():
        if not key.startswith("backbone."):
            continue
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")) or not key.startswith(tail):
            assert torch.equal(value, before[key]), f"{key} changed"  # front frozen, BatchNorm statistics kept
    assert not torch.equal(after["backbone.conv_head.weight"], before["backbone.conv_head.weight"])
    assert not torch.equal(after["backbone.blocks.6.0.conv_pwl.weight"], before["backbone.blocks.6.0.conv_pwl.weight"])


def test_adaptation_in_mini_batches_is_reproducible_from_its_seed(tiny_folder, tmp_path) -> None:
    ckpt = _source(tiny_folder, tmp_path / "source")
    lab = load_image_folder(write_tiny_folder(tmp_path / "lab b", classes=("normal", "odd"), per_class=10, seed=3))
    shots, _ = sample_shots(lab, 4, seed=0)
    heads = [
        adapt_model(ckpt, lab, shots, AdaptConfig(per_class=4, steps=4, views=2, batch_size=3, seed=seed))[0].head
        for seed in (0, 0, 1)
    ]
    weights = [head[-1].weight for head in heads]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_shots_come_only_from_the_crops_asked_for(tiny_folder) -> None:
    data = load_image_folder(tiny_folder)
    among = torch.arange(len(data)).numpy() % 2 == 0
    shots, rest = sample_shots(data, 2, seed=0, among=among)
    assert all(among[i] for i in shots) and not set(shots) & set(rest)


def test_stages_on_a_model_without_them_is_a_clear_error(tiny_folder, tmp_path, capsys) -> None:
    _source(tiny_folder, tmp_path / "source", arch="simple_cnn")
    lab = write_tiny_folder(tmp_path / "lab b", classes=("normal", "odd"), per_class=10, seed=3)
    args = ["adapt", str(tmp_path / "source"), "--data", str(lab), "--per-class", "4", "--stages", "1"]
    assert run_cli([*args, "--out", str(tmp_path / "adapted")]) == 2
    assert "--stages 1" in capsys.readouterr().err and not (tmp_path / "adapted").exists()
