"""The model card: one type read from checkpoints and bundles, written into both."""

from __future__ import annotations

import json

import pytest

from sperm_edge.card import ModelCard
from sperm_edge.errors import SpermEdgeError
from sperm_edge.preprocess import PreprocessSpec


def test_record_round_trip_and_defaults() -> None:
    spec = PreprocessSpec(img_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    card = ModelCard("cbam_efficientnet_lite0", ["a", "b", "c"], spec, "a", ["b", "c"], 1.7, {"crop_scale": 2.0})
    assert ModelCard.from_record(json.loads(json.dumps(card.to_record()))) == card
    old = {"arch": "x", "classes": ["n", "m"], "preprocess": spec.to_dict(), "normal_class": "n"}  # before T, framing
    plain = ModelCard.from_record(old)
    assert (plain.temperature, plain.framing, plain.abnormal_classes) == (1.0, None, ["m"])
    assert "framing" not in plain.to_record()


@pytest.mark.parametrize("broken", [{}, {"arch": "x", "classes": ["a"]}, {"arch": "x", "classes": 3, "preprocess": {}}])
def test_a_record_without_a_model_is_named(broken: dict) -> None:
    with pytest.raises(SpermEdgeError, match="manifest.json does not describe a model"):
        ModelCard.from_record(broken, "manifest.json")
