"""The reference row's engine: the runtime's PyTorch backend turned back to NCHW, same logits."""

from __future__ import annotations

import numpy as np

from sperm_edge.bench.eager import EagerTorchBackend
from sperm_edge.bundle import load_bundle
from sperm_edge.engines import TorchBackend
from tests.bench.conftest import IMG_SIZE


def test_eager_runs_nchw_and_matches_channels_last(tiny_bundle) -> None:
    import torch

    stem = load_bundle(tiny_bundle).checkpoint_stem()
    batch = np.random.default_rng(0).standard_normal((2, 3, IMG_SIZE, IMG_SIZE), dtype=np.float32)
    with EagerTorchBackend(stem, threads=1) as eager, TorchBackend(stem, threads=1) as channels_last:
        conv = next(m for m in eager._model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous()  # NCHW, not channels_last
        assert eager.name == "torch-eager"
        assert eager.output_names == ("logits",) and eager.infer(batch).cam is None
        np.testing.assert_allclose(eager.infer(batch).logits, channels_last.infer(batch).logits, atol=1e-4)
