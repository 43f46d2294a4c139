"""Temperature scaling at the end of training, and for runs trained before it (`sperm-edge calibrate`).

T is fitted on the validation split only; the test split's ECE before and after is reported, and a
reliability diagram of the test split is written beside the checkpoint (`reliability.png`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sperm_edge.calibration import calibrated_probs, fit_temperature
from sperm_edge.metrics import expected_calibration_error, softmax
from sperm_edge.train.evaluate import images_to_score
from sperm_edge.train.plots import plot_reliability

RELIABILITY_PNG = "reliability.png"


def fit_and_report(
    val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], run_dir: str | Path
) -> dict:
    """T from the (logits, labels) of the validation split; the test split's ECE before and after, plotted."""
    temperature = fit_temperature(*val)
    logits, labels = test
    raw, scaled = softmax(logits), calibrated_probs(logits, temperature)
    before, after = expected_calibration_error(raw, labels), expected_calibration_error(scaled, labels)
    curves = {f"softmax, ECE {before:.3f}": raw, f"T = {temperature:.2f} (fitted on val), ECE {after:.3f}": scaled}
    plot_reliability(curves, labels, Path(run_dir) / RELIABILITY_PNG, f"test split, {len(labels)} images")
    return {"temperature": temperature, "ece": before, "ece_calibrated": after}


def calibrate_run(checkpoint: str | Path, device: str = "auto") -> dict:
    """Fit temperature scaling for an existing run on its own validation split and store it in its checkpoint."""
    from sperm_edge.model.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
    from sperm_edge.model.inference import pick_device, predict_logits

    stem = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(stem)
    model = ckpt.build_model().to(pick_device(device))
    outputs = {}
    for part in ("val", "test"):
        dataset, _ = images_to_score(ckpt, None, part)
        outputs[part] = predict_logits(model, dataset.images, ckpt.card.preprocess), np.asarray(dataset.labels)
    result = fit_and_report(outputs["val"], outputs["test"], stem.parent)
    meta = dict(ckpt.meta)
    meta["temperature"] = result["temperature"]
    test_metrics = meta.setdefault("metrics", {}).setdefault("test", {})
    test_metrics.update(temperature=result["temperature"], ece_calibrated=result["ece_calibrated"])
    save_checkpoint(stem, model.cpu(), meta)
    return {**result, "n_val": len(outputs["val"][1]), "n_test": len(outputs["test"][1])}
