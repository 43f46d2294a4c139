from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from sperm_edge.data.folder import load_image_folder
from sperm_edge.data.splits import train_val_test_split
from sperm_edge.errors import SpermEdgeError
from sperm_edge.model.checkpoint import load_checkpoint
from sperm_edge.train.config import TrainConfig
from sperm_edge.train.evaluate import evaluate
from sperm_edge.train.run import train
from sperm_edge.train.trainer import SilentReporter, Trainer
from tests.conftest import run_cli


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        arch="simple_cnn",
        phase1_epochs=1,
        phase2_epochs=2,
        img_size=32,
        batch_size=8,
        patience=10,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_phase_one_freezes_the_backbone_and_phase_two_trains_it(tiny_folder, tmp_path) -> None:
    data = load_image_folder(tiny_folder)
    split = train_val_test_split(data.labels, data.pixel_hashes, 0)
    cfg = _cfg(tiny_folder, tmp_path / "run", arch="cbam_efficientnet_lite0", img_size=32)
    trainer = Trainer(cfg, data, split, tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    grads: dict[int, tuple[bool, bool]] = {}

    class Watch(SilentReporter):
        def epoch_end(self, record: dict) -> None:
            model = trainer.model
            backbone_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
            head_grad = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.attention.parameters())
            grads[record["phase"]] = (backbone_grad, head_grad)
            if record["phase"] == 1:  # weights and BatchNorm statistics untouched
                for key, value in model.backbone.state_dict().items():
                    assert torch.equal(value, before[f"backbone.{key}"]), key

    trainer.cfg.phase2_epochs = 1
    trainer.phases[1].epochs = 1
    trainer.reporter = Watch()
    trainer.fit()
    assert grads[1] == (False, True)
    assert grads[2] == (True, True)


def test_resume_after_interruption_reaches_the_same_epoch_count(tiny_folder, tmp_path) -> None:
    class Interrupt(SilentReporter):
        def epoch_end(self, record: dict) -> None:
            if record["phase"] == 2:
                raise KeyboardInterrupt

    cfg = _cfg(tiny_folder, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, reporter=Interrupt())
    assert not (tmp_path / "run" / "metrics.json").exists()
    train(cfg, resume=True)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [(r["phase"], r["epoch"]) for r in history] == [(1, 1), (2, 1), (2, 2)]

    train(_cfg(tiny_folder, tmp_path / "straight"))
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert len(straight) == len(history)


def test_ema_run_scores_every_candidate_and_keeps_the_final_average(tiny_folder, tmp_path) -> None:
    metrics = train(_cfg(tiny_folder, tmp_path / "run", ema_decay=0.9, keep="last"))
    names = {"raw-best", "raw-last", "ema-best", "ema-last"}
    assert set(metrics["candidates"]) == names
    assert {p.stem for p in (tmp_path / "run" / "candidates").glob("*.safetensors")} == names
    for scores in metrics["candidates"].values():
        assert set(scores) == {"val", "val_tta", "test", "test_tta"}
    assert metrics["kept"] == "ema-last"
    kept = load_checkpoint(tmp_path / "run")
    final_average = load_checkpoint(tmp_path / "run" / "candidates" / "ema-last")
    raw_final = load_checkpoint(tmp_path / "run" / "candidates" / "raw-last")
    for key, value in kept.state_dict.items():
        assert torch.equal(value, final_average.state_dict[key]), key
    assert any(not torch.equal(v, raw_final.state_dict[k]) for k, v in kept.state_dict.items())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert all("raw_val_macro_f1" in record for record in history)


def test_resume_restores_the_weight_average_where_it_stopped(tiny_folder, tmp_path) -> None:
    class Interrupt(SilentReporter):
        def epoch_end(self, record: dict) -> None:
            if record["phase"] == 2:
                raise KeyboardInterrupt

    cfg = _cfg(tiny_folder, tmp_path / "run", ema_decay=0.8, keep="last")
    data = load_image_folder(tiny_folder)
    split = train_val_test_split(data.labels, data.pixel_hashes, 0)
    interrupted = Trainer(cfg, data, split, tmp_path / "run", reporter=Interrupt())
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = Trainer(cfg, data, split, tmp_path / "run")
    resumed._restore()
    assert int(resumed.ema.n_averaged) == int(interrupted.ema.n_averaged) > 0
    for key, value in interrupted.ema.module.state_dict().items():
        assert torch.equal(resumed.ema.module.state_dict()[key], value), key
    metrics = train(cfg, resume=True)
    assert metrics["kept"] == "ema-last"


def test_train_cli_writes_checkpoint_metrics_and_plots_and_evaluate_reads_them(tiny_folder, tmp_path) -> None:
    out = tmp_path / "run"
    code = run_cli(
        [
            "train",
            "--data",
            str(tiny_folder),
            "--arch",
            "simple_cnn",
            "--out",
            str(out),
            "--phase1-epochs",
            "1",
            "--phase2-epochs",
            "3",
            "--img-size",
            "32",
            "--batch-size",
            "8",
        ]
    )
    assert code == 0
    for name in ("best.safetensors", "best.json", "metrics.json", "curves.png", "confusion.png", "split.json"):
        assert (out / name).is_file(), name
    assert (out / "reliability.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "ece", "ece_calibrated"} <= set(metrics)
    ckpt = load_checkpoint(out)
    assert ckpt.card.temperature == metrics["temperature"] > 0  # fitted on the val split, stored with the weights
    assert ckpt.card.classes == ["alpha", "beta", "gamma"] and ckpt.card.preprocess.img_size == 32
    assert set(ckpt.meta["split"]) >= {"train", "val", "test", "seed"}
    report = tmp_path / "eval.json"
    assert run_cli(["evaluate", str(out / "best.safetensors"), "--json", str(report)]) == 0
    scored = json.loads(report.read_text())
    # by default the run's own test split, nothing it trained on
    assert scored["n"] == len(ckpt.meta["split"]["test"]) < 36 and report.with_suffix(".png").is_file()
    assert scored["scored"] == {"data": str(tiny_folder), "split": "test", "n": scored["n"], "seen_in_training": 0}
    assert metrics["accuracy"] == pytest.approx(scored["accuracy"])


def test_evaluate_warns_when_asked_to_score_training_images(tiny_folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    train(_cfg(tiny_folder, out, phase2_epochs=1))
    split = load_checkpoint(out).meta["split"]
    capsys.readouterr()
    assert run_cli(["evaluate", str(out), "--data", str(tiny_folder), "--split", "all"]) == 0
    fitted = len(split["train"]) + len(split["val"])
    assert f"{fitted} of these 36 images were in the run's train or val split" in " ".join(
        capsys.readouterr().out.split()
    )
    # a copy of the data elsewhere is matched by pixel content, not by path
    copy = tmp_path / "copy"
    shutil.copytree(tiny_folder, copy)
    report = evaluate(out, copy, split="all")
    assert report["scored"]["seen_in_training"] == fitted and report["n"] == 36
    with pytest.raises(SpermEdgeError, match="pass --split all"):
        evaluate(out, copy)


def test_kfold_writes_one_folder_per_fold_and_a_summary(tiny_folder, tmp_path) -> None:
    summary = train(_cfg(tiny_folder, tmp_path / "cv", phase2_epochs=1), folds=3)
    assert summary["folds"] == 3 and len(summary["accuracy"]["per_fold"]) == 3
    for fold in (1, 2, 3):
        assert (tmp_path / "cv" / f"fold-{fold}" / "metrics.json").is_file()
    spread = json.loads((tmp_path / "cv" / "cv.json").read_text())["macro_f1"]
    per_fold = [json.loads((tmp_path / "cv" / f"fold-{f}" / "metrics.json").read_text())["macro_f1"] for f in (1, 2, 3)]
    assert spread["per_fold"] == pytest.approx(per_fold)
    assert spread["mean"] == pytest.approx(np.mean(per_fold)) and spread["std"] == pytest.approx(
        np.std(per_fold, ddof=1)
    )


def test_kfold_resumes_from_an_archive_of_finished_folds(tiny_folder, tmp_path) -> None:
    """An archive keeps only the folds' JSON records: resuming keeps those folds and trains the rest."""
    cfg = _cfg(tiny_folder, tmp_path / "cv", phase2_epochs=1)
    train(cfg, folds=2)
    kept = tmp_path / "archive" / "fold-1"
    kept.mkdir(parents=True)
    for name in ("metrics.json", "history.json", "split.json"):
        shutil.copy(tmp_path / "cv" / "fold-1" / name, kept / name)
    first = json.loads((kept / "metrics.json").read_text())
    with pytest.raises(SpermEdgeError, match="nothing to resume"):
        train(_cfg(tiny_folder, tmp_path / "archive"), resume=True)  # one split: there is no finished fold
    summary = train(_cfg(tiny_folder, tmp_path / "archive", phase2_epochs=1), folds=2, resume=True)
    trained = json.loads((tmp_path / "cv" / "fold-2" / "metrics.json").read_text())["accuracy"]
    assert summary["accuracy"]["per_fold"] == [first["accuracy"], pytest.approx(trained)]
    assert (tmp_path / "archive" / "fold-2" / "metrics.json").is_file()
    # a fold another splitter dealt (or from other data) is not mixed with this version's folds
    record = json.loads((kept / "split.json").read_text())
    record["test"], record["train"] = record["train"][: len(record["test"])], record["test"] + record["train"]
    (kept / "split.json").write_text(json.dumps(record))
    with pytest.raises(SpermEdgeError, match="tested on other images than this version's fold 1"):
        train(_cfg(tiny_folder, tmp_path / "archive", phase2_epochs=1), folds=2, resume=True)


def test_loader_workers_give_the_same_training_and_metrics_name_the_device(tiny_folder, tmp_path) -> None:
    """Augmentation seeds derive from (seed, epoch, index), so worker processes change nothing but speed."""
    losses = {}
    for workers in (0, 2):
        out = tmp_path / f"workers-{workers}"
        metrics = train(_cfg(tiny_folder, out, workers=workers))
        assert metrics["train_device"].startswith("cpu: ")
        losses[workers] = [r["train_loss"] for r in json.loads((out / "history.json").read_text())]
    assert losses[2] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "{missing}", "--out", "{out}"], "data folder not found"),
        (["train", "--data", "{tiny}", "--arch", "resnet9", "--out", "{out}"], "unknown architecture"),
        # typer's choices refuse what the hand-written checks did, naming the same choices
        (["train", "--data", "{tiny}", "--keep", "middle", "--out", "{out}"], "'middle' is not one of 'best', 'last'"),
        (
            ["train", "--data", "{tiny}", "--balance", "x", "--out", "{out}"],
            "'x' is not one of 'loss', 'sampler', 'none'",
        ),
        (
            ["train", "--data", "{tiny}", "--augment", "heavy", "--out", "{out}"],
            "'heavy' is not one of 'standard', 'robust'",
        ),
        (["evaluate", "{junk}", "--split", "dev"], "'dev' is not one of 'test', 'val', 'train', 'all'"),
        (["train", "--data", "{tiny}", "--teacher", "{missing}", "--out", "{out}"], "checkpoint file not found"),
        (["evaluate", "{junk}", "--data", "{tiny}"], "not a sperm-edge checkpoint"),
        (["evaluate", "{missing}", "--data", "{tiny}"], "checkpoint file not found"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(tiny_folder, tmp_path, capsys, monkeypatch, args, message) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # typer's error panel on one line
    (tmp_path / "junk.json").write_text("{}")
    (tmp_path / "junk.safetensors").write_bytes(b"x")
    subs = {
        "{missing}": str(tmp_path / "nope"),
        "{out}": str(tmp_path / "o"),
        "{tiny}": str(tiny_folder),
        "{junk}": str(tmp_path / "junk.safetensors"),
    }
    assert run_cli([subs.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_truncated_checkpoint_is_refused(tiny_folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    train(_cfg(tiny_folder, out, phase2_epochs=1))
    weights = out / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert run_cli(["evaluate", str(out), "--data", str(tiny_folder)]) == 2
    assert "truncated or altered" in capsys.readouterr().err


def test_calibrate_fits_an_older_run_on_its_validation_split(tiny_folder, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    train(_cfg(tiny_folder, out, phase2_epochs=1))
    meta = json.loads((out / "best.json").read_text())
    meta.pop("temperature")  # as written before temperature scaling existed
    (out / "best.json").write_text(json.dumps(meta))
    (out / "reliability.png").unlink()
    assert load_checkpoint(out).card.temperature == 1.0
    assert run_cli(["calibrate", str(out)]) == 0
    assert "test ECE" in capsys.readouterr().out
    ckpt = load_checkpoint(out)  # still verifies: weights and their hash unchanged
    assert ckpt.card.temperature != 1.0 and ckpt.meta["metrics"]["test"]["temperature"] == ckpt.card.temperature
    assert (out / "reliability.png").is_file()
    assert run_cli(["calibrate", str(tmp_path / "nowhere")]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err


def test_adapt_fits_another_lab_from_k_crops_and_writes_an_exportable_run(tiny_folder, tmp_path, capsys) -> None:
    from tests.conftest import write_tiny_folder

    source = tmp_path / "source"
    train(_cfg(tiny_folder, source, phase2_epochs=1))
    # "another lab": other class names and a darker stain
    lab = write_tiny_folder(tmp_path / "lab b", classes=("normal", "odd"), per_class=10, seed=3)
    out = tmp_path / "adapted"
    args = ["adapt", str(source), "--data", str(lab), "--per-class", "4"]
    assert run_cli([*args, "--out", str(out), "--steps", "20"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.card.classes == ["normal", "odd"] and ckpt.card.temperature > 0
    split = ckpt.meta["split"]
    assert len(split["train"]) == 8 and len(split["test"]) == 12 and not set(split["train"]) & set(split["test"])
    assert ckpt.meta["adapted_from"]["classes"] == ["alpha", "beta", "gamma"]
    assert ckpt.meta["adapted_from"]["weights_sha256"] == load_checkpoint(source).meta["weights_sha256"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 12 and {"accuracy", "ece"} <= set(metrics)
    # the frozen backbone is the source's, the head is new
    src_state = load_checkpoint(source).state_dict
    assert all(torch.equal(v, src_state[k]) for k, v in ckpt.state_dict.items() if k.startswith("backbone."))
    assert run_cli(["export", str(out), "--out", str(tmp_path / "bundle")]) == 0
    capsys.readouterr()
    # bad input: too few crops to leave a test set, an existing output, a missing source
    assert run_cli(["adapt", str(source), "--data", str(lab), "--per-class", "10", "--out", str(tmp_path / "x")]) == 2
    assert "needs more" in capsys.readouterr().err
    assert run_cli([*args, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    missing = ["adapt", str(tmp_path / "none"), "--data", str(lab), "--per-class", "4", "--out", str(tmp_path / "y")]
    assert run_cli(missing) == 2
    assert "checkpoint file not found" in capsys.readouterr().err
