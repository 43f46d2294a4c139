from __future__ import annotations

import numpy as np
import pytest
import torch

from sperm_edge.tta import VIEWS, dihedral_view, dihedral_views, mean_over_views, undo_dihedral_view


def test_dihedral_views_are_the_eight_distinct_symmetries_of_each_image() -> None:
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    views = dihedral_views(images)
    assert views.shape == (VIEWS * 2, 3, 4, 4)
    first = views.reshape(VIEWS, 2, 3, 4, 4)[:, 0]
    assert len({tuple(v.flatten().tolist()) for v in first}) == VIEWS
    torch.testing.assert_close(first[0], images[0])
    torch.testing.assert_close(first[1], torch.rot90(images[0], 1, dims=(-2, -1)))
    torch.testing.assert_close(first[4], images[0].flip(-1))


def test_mean_over_views_averages_each_images_own_views() -> None:
    per_view = torch.tensor([[float(v), float(v) + 10 * n] for v in range(VIEWS) for n in range(3)])
    mean = mean_over_views(per_view)
    expected = torch.tensor([[3.5, 3.5 + 10 * n] for n in range(3)])
    torch.testing.assert_close(mean, expected)


def test_a_rotation_invariant_model_is_unchanged_by_tta() -> None:
    images = torch.rand(3, 3, 8, 8)

    def pooled(x: torch.Tensor) -> torch.Tensor:  # global average pooling is rotation invariant
        return x.mean(dim=(-2, -1))

    torch.testing.assert_close(mean_over_views(pooled(dihedral_views(images))), pooled(images))


def test_non_square_images_are_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        dihedral_views(torch.zeros(1, 3, 4, 6))


def test_numpy_views_are_the_torch_views_in_the_same_order() -> None:
    images = torch.rand(2, 3, 5, 5)
    np.testing.assert_array_equal(dihedral_views(images.numpy()), dihedral_views(images).numpy())
    logits = torch.rand(VIEWS * 2, 4)
    np.testing.assert_allclose(mean_over_views(logits.numpy()), mean_over_views(logits).numpy(), rtol=1e-6)


def test_one_view_is_its_slice_of_the_eight_and_undoing_it_restores_the_maps() -> None:
    images = np.random.default_rng(0).random((2, 3, 5, 5)).astype(np.float32)
    views = dihedral_views(images).reshape(VIEWS, 2, 3, 5, 5)
    for view in range(VIEWS):
        np.testing.assert_array_equal(dihedral_view(images, view), views[view])
        np.testing.assert_array_equal(undo_dihedral_view(dihedral_view(images, view), view), images)
    assert not np.array_equal(undo_dihedral_view(views[1], 5), images)  # the wrong view does not undo it
