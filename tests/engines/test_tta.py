from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from sperm_edge.bundle import load_bundle
from sperm_edge.engines import DihedralTTA, OrtBackend, open_backend
from sperm_edge.tta import VIEWS, dihedral_views


def _batch(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 3, size, size)).astype(np.float32)


def test_tta_averages_the_logits_of_the_eight_views_and_keeps_cam_and_features_of_the_crop(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    x = _batch(3, bundle.card.preprocess.img_size)
    with open_backend(bundle, "ort-cpu", threads=1, tta=True) as tta, open_backend(bundle, "ort-cpu", threads=1) as one:
        assert tta.name == "ort-cpu+tta" and tta.describe()["tta"] == f"dihedral, {VIEWS} views"
        assert tta.output_names == one.output_names and tta.has_cam
        out, plain = tta.infer(x), one.infer(x)
        per_view = one.infer(dihedral_views(x)).logits.reshape(VIEWS, 3, -1)
        np.testing.assert_allclose(out.logits, per_view.mean(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out.cam, plain.cam, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.features, plain.features, rtol=1e-5, atol=1e-6)
    assert not tta.is_active and not tta.inner.is_active


def test_tta_answers_alike_for_a_crop_turned_or_mirrored(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    x = _batch(2, bundle.card.preprocess.img_size)
    turned = [np.rot90(x, 1, (-2, -1)), np.rot90(x, 2, (-2, -1)), np.flip(x, -1), np.flip(np.rot90(x, 3, (-2, -1)), -2)]
    with open_backend(bundle, "ort-cpu", threads=1, tta=True) as tta, open_backend(bundle, "ort-cpu", threads=1) as one:
        reference = tta.infer(x).logits
        for view in turned:
            np.testing.assert_allclose(tta.infer(view).logits, reference, rtol=1e-4, atol=1e-5)
        assert any(not np.allclose(one.infer(view).logits, one.infer(x).logits, atol=1e-4) for view in turned)


class _SmallBatchOrt(OrtBackend):
    """ONNX Runtime with a largest batch, as a TensorRT engine's optimisation profile sets one."""

    def _activate_impl(self):
        return replace(super()._activate_impl(), max_batch=4)


def test_tta_splits_the_views_into_batches_the_engine_accepts(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    x = _batch(3, bundle.card.preprocess.img_size)  # 24 views through an engine that takes 4 at a time
    with DihedralTTA(_SmallBatchOrt(bundle.onnx_path("fp32"), "cpu", threads=1)) as small:
        with open_backend(bundle, "ort-cpu", threads=1, tta=True) as whole:
            a, b = small.infer(x), whole.infer(x)
    for name in ("logits", "cam", "features"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6)
