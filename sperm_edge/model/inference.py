"""Batched PyTorch inference over RGB uint8 images with the shared preprocessing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sperm_edge.metrics import softmax
from sperm_edge.preprocess import PreprocessSpec, preprocess_batch


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    spec: PreprocessSpec,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> np.ndarray:
    """Logits (N x classes, float32) for RGB uint8 images of any size."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(preprocess_batch(images[start : start + batch_size], spec)).to(device)
        out.append(model(batch.contiguous(memory_format=torch.channels_last)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict_probs(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    spec: PreprocessSpec,
    batch_size: int = 64,
    device: torch.device | None = None,
) -> np.ndarray:
    return softmax(predict_logits(model, images, spec, batch_size, device))
