"""Known data sets: class order, which class is the normal form, and training defaults that suit them."""

from __future__ import annotations

import re
from dataclasses import dataclass

NON_SPERM = re.compile(r"non[-_ ]?sperm", re.IGNORECASE)  # a class of debris, not of sperm (SMIDS' `Non-Sperm`)


@dataclass(frozen=True)
class Preset:
    name: str
    classes: tuple[str, ...]
    normal_class: str | None
    typical_size: str
    phase1_epochs: int
    phase2_epochs: int
    img_size: int


PRESETS: dict[str, Preset] = {
    "hushem": Preset(
        "hushem",
        ("01_Normal", "02_Tapered", "03_Pyriform", "04_Amorphous"),
        "01_Normal",
        "131x131 (a few 131 wide, 118-127 high)",
        phase1_epochs=5,
        phase2_epochs=20,
        img_size=128,
    ),
    "smids": Preset(
        "smids",
        ("Abnormal_Sperm", "Non-Sperm", "Normal_Sperm"),
        "Normal_Sperm",
        "122-259 x 80-264, many aspect ratios",
        phase1_epochs=3,
        phase2_epochs=12,
        img_size=128,
    ),
}

GENERIC = Preset("generic", (), None, "any", phase1_epochs=3, phase2_epochs=10, img_size=128)


def detect_preset(class_names: list[str]) -> Preset:
    """The preset whose classes are exactly these folder names, else a generic one (sorted folders)."""
    for preset in PRESETS.values():
        if set(preset.classes) == set(class_names):
            return preset
    return GENERIC


def abnormal_classes(classes: list[str], normal_class: str | None) -> list[str]:
    """Classes a person should look at: every class but the normal form (all of them if none is known)."""
    return [c for c in classes if c != normal_class]
