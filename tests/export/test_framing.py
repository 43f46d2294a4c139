from __future__ import annotations

from pathlib import Path

import numpy as np

from sperm_edge.export.framing import measure_framing
from sperm_edge.export.images import ImageSet
from sperm_edge.preprocess import decode_image


def test_the_training_crops_head_width_and_crop_scale_are_measured_from_their_stain(hushem: Path) -> None:
    paths = [sorted((hushem / c).iterdir())[:5] for c in ("01_Normal", "04_Amorphous")]
    images = ImageSet("hushem sample", [decode_image(p) for group in paths for p in group])
    framing = measure_framing(images)
    assert framing is not None and framing["measured"] == framing["of"] == 10
    assert 20 <= framing["head_width_px"] <= 40 and framing["crop_side_px"] == 131.0
    assert 3.5 <= framing["crop_scale"] <= 6.0  # HuSHeM crops are about 4.6 head widths across


def test_no_head_in_blank_crops_records_no_framing() -> None:
    blank = np.full((64, 64, 3), 220, np.uint8)
    assert measure_framing(ImageSet("blank", [blank, blank])) is None
