"""Looks and class sets of the synthetic stained smears, one style per public data set imitated.

Colour follows the Beer-Lambert stain model used in colour deconvolution (Ruifrok & Johnston,
"Quantification of histochemical staining by color deconvolution", 2001): each stain is an
absorbance vector over R, G, B and a pixel transmits ``background * exp(-sum(density * absorbance))``.
The ranges were measured on the real sets (median background and darkest 3% of pixels, 5th to 95th
percentile): HuSHeM (Shaker et al. 2017) has a pink background and purple heads, SMIDS (Ilhan et al.
2020) a grey-beige background and blue-violet heads. Colours are drawn per image, independently of
the class, so that the classes differ by shape only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sperm_edge.errors import SpermEdgeError

#: Morphologies a cell can be drawn with. ``abnormal`` picks a head or neck/tail defect at random,
#: ``debris`` a non-sperm object (round cell, clump of stained debris).
KINDS = ("normal", "tapered", "pyriform", "amorphous", "abnormal", "debris")


@dataclass(frozen=True)
class Style:
    """Everything that differs between the imitated data sets; sizes are in crop pixels."""

    name: str
    class_kinds: dict[str, str]  # class folder name -> kind (one of KINDS)
    crop_width: tuple[int, int]  # min, max (equal: fixed size)
    crop_height: tuple[int, int]
    bg: tuple[tuple[float, float, float], tuple[float, float, float]]  # RGB range of the background
    nuclear: tuple[float, float, float]  # absorbance direction of the head stain (G = 1)
    nuclear_alt: tuple[float, float, float]  # second hue; each image mixes the two at random
    acrosome: tuple[float, float, float]  # absorbance direction of the lighter acrosome stain
    gain: tuple[float, float]  # range of the stain strength per image
    head_area: tuple[float, float]  # head area in px^2 in a crop (common to all classes)
    blur: tuple[float, float]  # defocus, Gaussian sigma in px
    noise: tuple[float, float]  # sensor noise, sigma in grey levels
    chroma_shift: tuple[float, float]  # lateral chromatic aberration, px
    jpeg_quality: tuple[int, int]
    halo: tuple[float, float]  # bright ring around heads (phase halo), log-brightness
    neighbour_prob: float  # chance that a crop shows parts of neighbouring cells
    field_scale: float  # head size in a 1280x960 field relative to a crop

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in folder order."""
        return tuple(self.class_kinds)

    def kind(self, cls: str) -> str:
        """The kind of cell drawn for class ``cls``; unknown names fail with the valid ones."""
        try:
            return self.class_kinds[cls]
        except KeyError:
            raise SpermEdgeError(
                f"unknown class {cls!r} for style {self.name!r}; valid: {', '.join(self.classes)}"
            ) from None

    def sample_crop_size(self, rng: np.random.Generator) -> tuple[int, int]:
        """A crop (width, height) as the real set has them."""
        (w0, w1), (h0, h1) = self.crop_width, self.crop_height
        if w0 == w1 and h0 == h1:
            return w0, h0
        w = int(np.clip(rng.normal(0.5 * (w0 + w1) - 25, 0.17 * (w1 - w0)), w0, w1))
        h = int(np.clip(w * np.exp(rng.normal(0.02, 0.1)), h0, h1))
        return w, h


STYLES: dict[str, Style] = {
    "hushem": Style(
        name="hushem",
        class_kinds={
            "01_Normal": "normal",
            "02_Tapered": "tapered",
            "03_Pyriform": "pyriform",
            "04_Amorphous": "amorphous",
        },
        crop_width=(131, 131),
        crop_height=(131, 131),
        bg=((242.0, 154.0, 170.0), (262.0, 188.0, 222.0)),
        nuclear=(0.60, 1.0, 0.51),
        nuclear_alt=(0.72, 1.0, 0.62),
        acrosome=(0.15, 1.0, 0.28),
        gain=(0.85, 1.6),
        head_area=(780.0, 1200.0),
        blur=(0.5, 1.3),
        noise=(1.0, 3.0),
        chroma_shift=(0.0, 0.4),
        jpeg_quality=(60, 95),
        halo=(0.1, 0.35),
        neighbour_prob=0.45,
        field_scale=0.85,
    ),
    "smids": Style(
        name="smids",
        class_kinds={"Abnormal_Sperm": "abnormal", "Non-Sperm": "debris", "Normal_Sperm": "normal"},
        crop_width=(122, 259),
        crop_height=(100, 264),
        bg=((191.0, 181.0, 175.0), (219.0, 213.0, 204.0)),
        nuclear=(0.62, 1.0, 0.08),
        nuclear_alt=(0.75, 1.0, 0.22),
        acrosome=(0.12, 1.0, 0.05),
        gain=(0.8, 1.8),
        head_area=(650.0, 1100.0),
        blur=(0.9, 2.0),
        noise=(1.5, 4.0),
        chroma_shift=(1.0, 2.4),
        jpeg_quality=(50, 90),
        halo=(0.05, 0.2),
        neighbour_prob=0.35,
        field_scale=0.8,
    ),
}


def get_style(style: str | Style) -> Style:
    """Look a style up by name (``hushem`` or ``smids``); unknown names fail with the valid ones."""
    if isinstance(style, Style):
        return style
    try:
        return STYLES[style.lower()]
    except KeyError:
        raise SpermEdgeError(f"unknown synthetic style {style!r}; valid: {', '.join(STYLES)}") from None
