"""Offline synthetic stained smears: single-cell crops, microscope fields and panning videos.

Everything the toolkit needs to run its main job on a fresh machine with nothing downloaded:
class-folder crop sets laid out like HuSHeM and SMIDS (with head masks), multi-cell fields and
stage-panning clips with ground truth (boxes, classes, masks, stable cell ids). numpy and OpenCV
only; every output is deterministic for a seed.
"""

from sperm_edge.data.synthetic._style import STYLES, Style, get_style
from sperm_edge.data.synthetic.dataset import MASKS_DIR, render_crop, write_crop_dataset
from sperm_edge.data.synthetic.fields import render_field, write_field
from sperm_edge.data.synthetic.render import polygon_mask, render_cell
from sperm_edge.data.synthetic.video import SyntheticVideo, write_video

__all__ = [
    "MASKS_DIR",
    "STYLES",
    "Style",
    "SyntheticVideo",
    "get_style",
    "polygon_mask",
    "render_cell",
    "render_crop",
    "render_field",
    "write_crop_dataset",
    "write_field",
    "write_video",
]
