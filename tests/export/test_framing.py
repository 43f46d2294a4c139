from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sperm_edge.data.real_fields import RealFieldVideo
from sperm_edge.data.real_fields.sprites import head_mask
from sperm_edge.export.framing import head_in_crop, measure_framing
from sperm_edge.export.images import ImageSet
from sperm_edge.localize import LocalizerConfig, find_cells
from sperm_edge.preprocess import decode_image
from sperm_edge.runtime.scoring import match_box


def test_the_training_crops_head_width_and_crop_scale_are_measured_by_the_localiser(hushem: Path) -> None:
    paths = [sorted((hushem / c).iterdir())[:5] for c in ("01_Normal", "04_Amorphous")]
    images = ImageSet("hushem sample", [decode_image(p) for group in paths for p in group])
    framing = measure_framing(images)
    assert framing is not None and framing["of"] == 10 and framing["measured"] >= 9
    assert 20 <= framing["head_width_px"] <= 40 and framing["crop_side_px"] == 131.0
    assert 3.5 <= framing["crop_scale"] <= 6.0  # HuSHeM crops are about 4.8 head widths across
    assert framing["method"].startswith("runtime localiser")


def test_crops_of_a_class_that_is_not_sperm_are_left_out(smids: Path) -> None:
    classes = ["Abnormal_Sperm", "Non-Sperm", "Normal_Sperm"]
    images = ImageSet("smids sample", labels=[])
    for k, name in enumerate(classes):
        for path in sorted((smids / name).iterdir())[:4]:
            images.images.append(decode_image(path))
            images.labels.append(k)
    framing = measure_framing(images, classes)
    assert framing is not None and framing["of"] == 8


@pytest.mark.parametrize("style", ["hushem", "smids"])
def test_a_real_crop_composed_into_a_field_is_cut_back_at_its_training_scale(hushem: Path, style: str) -> None:
    """A head's width as the localiser measures it in a field composed from real crops is its width in the crop
    it came from (within 4%, median over the cells), so a field crop of `crop_scale` head widths frames it as the
    training crops were framed. The stain mask that measured the training heads before was 3-5% wider: the
    crops it implied were that much (with SMIDS' non-sperm crops, 8%) too tight."""
    video = RealFieldVideo(hushem.parent, cells=14, frames=1, seed=7, style=style, size=(640, 480))
    image, truth = video.frame(0), video.truth(0)
    sources = {c.id: decode_image(hushem.parent / c.sprite.source) for c in video.cells if not c.sprite.debris}
    framing = measure_framing(ImageSet("the field's crops", list(sources.values())))
    assert framing is not None
    cfg = LocalizerConfig.framed(framing)
    found = find_cells(image, cfg)
    field_vs_crop, stain_vs_localiser = [], []
    for det in found:
        cell = match_box(det.head_box, truth["cells"])
        if cell is None or cell["debris"] or cell["partial"]:
            continue
        original = sources[cell["id"]]
        head = head_in_crop(original)
        if head is None:
            continue
        field_vs_crop.append(np.sqrt(det.area / head.area))
        stain_vs_localiser.append(np.sqrt(head_mask(original).sum() / head.area))
    assert len(field_vs_crop) >= 8
    assert 0.96 <= float(np.median(field_vs_crop)) <= 1.04, np.median(field_vs_crop)
    side = found[0].crop_box[2] - found[0].crop_box[0]
    assert side == round(framing["crop_scale"] * np.median([np.sqrt(d.area) for d in found]))
    assert float(np.median(stain_vs_localiser)) > 1.02, np.median(stain_vs_localiser)
