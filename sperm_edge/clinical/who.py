"""What the WHO laboratory manual (6th edition, 2021) says about a morphology result, applied to one report.

The manual's lower reference limit for normal forms is 4% (the 5th centile of fertile men, with its
95% confidence interval 3.9-4.0%), and it asks for at least 200 spermatozoa assessed. A result below
the limit is called teratozoospermia. The model's classes are mapped to the manual's defect
categories by name: HuSHeM's tapered, pyriform and amorphous heads are head defects; SMIDS's
"Abnormal_Sperm" is any defect, without saying which part of the cell carries it.
"""

from __future__ import annotations

import re

from sperm_edge.data.presets import NON_SPERM
from sperm_edge.runtime.report import WHO_MINIMUM

MANUAL = "WHO laboratory manual for the examination and processing of human semen, 6th edition (2021)"
NORMAL_FORMS_LIMIT = 4.0  # per cent: the lower reference limit for normal forms

# (pattern in a class name, the WHO category it belongs to); the first that matches wins
CATEGORIES: tuple[tuple[str, str], ...] = (
    (r"non.?sperm|debris", "not a spermatozoon (left out of the percentage)"),
    (
        r"tapered|pyriform|amorphous|round|pin|small|large|vacuol|double|duplicate|acrosom|head",
        "head defect",
    ),  # fmt: skip
    (r"neck|midpiece|mid.piece", "neck and midpiece defect"),
    (r"tail|coiled|principal", "principal piece (tail) defect"),
    (r"droplet|cytoplasm", "excess residual cytoplasm"),
    (r"abnormal", "abnormal form (head, midpiece or tail defect: not told apart by this model)"),
)


def category(name: str, normal_class: str | None) -> str:
    """The WHO category a class belongs to ('normal form' for the bundle's normal class)."""
    if name == normal_class:
        return "normal form"
    for pattern, label in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "abnormal form (category not known for this class)"


def verdict(report: dict) -> str:
    """One line for the nominal result: teratozoospermia, normal morphology, or why there is no result."""
    pct = report.get("percent_normal")
    if report.get("normal_class") is None:
        return "no morphology result: the model has no normal class"
    if not report.get("sperm_counted") or pct is None:
        return "no morphology result: no spermatozoa were assessed"
    provisional = f"; provisional: fewer than {WHO_MINIMUM} assessed" if report["sperm_counted"] < WHO_MINIMUM else ""
    if pct < NORMAL_FORMS_LIMIT:
        return f"teratozoospermia (normal forms below the WHO lower reference limit{provisional})"
    return "normal forms at or above the WHO lower reference limit" + (f" ({provisional[2:]})" if provisional else "")


def interpretation(report: dict) -> list[str]:
    """What a reader must know about this result, most important first, in plain sentences."""
    said = verdict(report)
    lines = [said[0].upper() + said[1:] + "."]
    pct, ci, n = report.get("percent_normal"), report.get("ci95"), report.get("sperm_counted") or 0
    if pct is not None and ci is not None:
        lo, hi = ci
        where = "below" if hi < NORMAL_FORMS_LIMIT else "above" if lo >= NORMAL_FORMS_LIMIT else "on both sides of"
        lines.append(f"Normal forms {pct:.1f}% (95% Wilson interval {lo:.1f}-{hi:.1f}%); the interval lies {where} "
                     f"the {NORMAL_FORMS_LIMIT:g}% limit.")  # fmt: skip
    if n < WHO_MINIMUM:
        lines.append(f"Only {n} spermatozoa were assessed; the manual asks for at least {WHO_MINIMUM}. The "
                     "percentage is uncertain (see its interval): assess more fields before reporting it.")  # fmt: skip
    status = report.get("status")
    if status == "aborted":
        lines.append(f"The run was aborted ({report.get('error') or 'no reason recorded'}): the counts cover only "
                     "the cells assessed before it ended.")  # fmt: skip
    elif status == "stopped":
        lines.append("The run was stopped before its source ended: the counts cover the fields assessed until then.")
    drift = report.get("drift") or {}
    if drift.get("warning"):
        lines.append("Drift warning: these cells do not look like the images the model was trained on (another "
                     "stain, microscope or preparation). Check the flagged cells by eye, and adapt the model to "
                     "this laboratory's images before relying on the numbers.")  # fmt: skip
    return lines


def excluded(name: str) -> bool:
    """Whether a class is not a spermatozoon (left out of the percentage)."""
    return bool(NON_SPERM.search(name))
