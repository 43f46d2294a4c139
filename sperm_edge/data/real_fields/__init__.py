"""Fields and panning clips composed from real labelled crops (HuSHeM, SMIDS): the real-cell test bench.

Synthetic clips (`sperm_edge.data.synthetic`) stay for fast unit tests; targets are measured here.
`sprites` cuts a cell out of its crop, `slide` lays cells out, `video` pans over the slide.
"""

from sperm_edge.data.real_fields.library import REAL_STYLES, get_real_style
from sperm_edge.data.real_fields.sprites import Sprite, make_sprite
from sperm_edge.data.real_fields.video import RealFieldVideo, write_real_field

__all__ = ["REAL_STYLES", "RealFieldVideo", "Sprite", "get_real_style", "make_sprite", "write_real_field"]
