"""The run's drift verdict (`report.json`'s `drift`) and the plain words the report and the CLI say about it.

The cell scores come from the pipeline (each event's `drift_score`); the model and its
validation-set thresholds from the bundle (`sperm_edge.drift`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sperm_edge.drift import DriftModel
from sperm_edge.runtime.verifier import NOT_A_HEAD

ADVICE = (
    "the counts and % normal may not hold for this microscope, stain or camera. Check a sample by hand, "
    "and adapt the model to this lab: label a few crops per class and run "
    "`sperm-edge adapt BUNDLE --data LAB_DIR --per-class 20 --out RUN`, then export the adapted run"
)
NO_MODEL = "no drift check: the bundle carries no description of its training data (re-export it to add one)"


def run_drift(model: DriftModel | None, events: Sequence[dict], mode: str = "crop") -> dict | None:
    """report.json's `drift` from the cells' scores; None for a bundle without a drift model. A field run is
    judged by the field rule (`DriftModel.field_p_value`).

    Cells the head verifier set aside as not a head (`reason` `not_a_head`: debris, tails, empty glass) are left
    out: the question is whether the *heads* look like the training crops, and debris never did."""
    if model is None:
        return None
    scores = [e.get("drift_score") for e in events if e.get("reason") != NOT_A_HEAD]
    summary = model.summarize(scores, field=mode == "field")
    if events and summary["n"] == 0:
        summary["note"] = "the engine gave no pooled features (a model exported without the `features` output)"
    return summary


def drift_message(drift: dict | None) -> str:
    """One plain sentence: whether the run's cells look like the training data, and what to do if not."""
    if drift is None:
        return NO_MODEL
    if drift.get("score") is None or drift.get("note"):
        return f"drift check inconclusive: {drift.get('note', 'no cell was scored')}"
    share = 100.0 * drift["share_out"]
    expected = (
        f"a field run warns when significantly more than {drift['tolerated_share']:.0%} are"
        if drift.get("rule") == "field-share" else "about 5% expected"
    )  # fmt: skip
    figures = (
        f"median drift score {drift['score']:.2f} over {drift['n']} cells against {drift['validation_score']:.2f} "
        f"on the validation crops, p = {drift['p_value']:.2g}; "
        f"{share:.0f}% of cells beyond the cell threshold {drift['threshold']:.2f}, {expected}"
    )
    if drift["warning"]:
        return f"this run's cells look unlike the training data ({figures}): {ADVICE}"
    return f"the cells look like the training data ({figures})"
