"""The verifier's threshold: the highest P(head) that keeps the validation heads it must."""

from __future__ import annotations

import numpy as np
import pytest

from sperm_edge.errors import SpermEdgeError
from sperm_edge.export.verifier import choose_threshold


def test_the_threshold_keeps_99_percent_of_validation_heads_and_no_more_than_it_must() -> None:
    rng = np.random.default_rng(0)
    heads = rng.uniform(0.3, 1.0, 200)
    others = rng.uniform(0.0, 0.5, 200)
    probs, is_head = np.concatenate([heads, others]), np.r_[np.ones(200, bool), np.zeros(200, bool)]
    threshold = choose_threshold(probs, is_head)
    assert (heads >= threshold).mean() >= 0.99
    assert (heads >= np.nextafter(threshold, 1.0)).mean() < 0.99  # any higher loses one head too many
    assert choose_threshold(np.array([0.9, 0.2]), np.array([True, False]), 1.0) == pytest.approx(0.9)
    with pytest.raises(SpermEdgeError, match="no head"):
        choose_threshold(np.array([0.2]), np.array([False]))
