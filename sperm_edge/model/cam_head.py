"""Grad-CAM++ in the forward pass: the closed form for models whose explained map is pooled, then one linear layer.

Grad-CAM++ (Chattopadhyay et al., WACV 2018, eq. 19) as pytorch-grad-cam computes it, for the
feature map `A` (C x H x W) that Grad-CAM++ explains (`model.attention`'s output) and class c:

    g_ck     = d logit_c / d A_kij
    S_k      = sum_ij A_kij
    alpha_ck = g_ck^2 / (2 g_ck^2 + S_k g_ck^3 + eps)        (0 where g_ck = 0; eps = 1e-6)
    w_ck     = sum_ij relu(g_ck) alpha_ck
    cam_c    = relu(sum_k w_ck A_k)

When `A` feeds global average pooling, (eval-mode) dropout and one linear layer with weight W,
`logit_c = sum_k W_ck mean_ij(A_kij) + b_c`, so the gradient is the same at every position:
`g_ck = W_ck / (H W)`. Then `w_ck = H W relu(g_ck) g_ck^2 / (2 g_ck^2 + S_k g_ck^3 + eps)` needs no
backward pass: everything but `S_k` is a constant of the weights. pytorch-grad-cam's `eps` is
kept because it is not negligible here (g^2 is around 1e-8 for these heads).

`CamClassifier` wraps such a model and returns `(logits, cam, features)` from one forward pass:
the logits exactly as the model computes them, `cam` for all K classes ([N, K, H, W], after
its ReLU, before any normalisation or resize) and the pooled `features` ([N, C]). The ONNX
export writes this module, so every engine built from it has the three outputs.
"""

from __future__ import annotations

import torch
from torch import nn

GRADCAM_PP_EPS = 1e-6  # pytorch_grad_cam.GradCAMPlusPlus.get_cam_weights
CAM_MODULE = "cam"  # submodule name: its ONNX nodes are named "/cam/..."


def linear_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(the head up to the pooled features, its final linear layer) when `model.head` is pool-then-linear, else None.

    Pool-then-linear: AdaptiveAvgPool2d(1), Flatten, any Dropout, then one Linear, in that order.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Sequential) or not hasattr(model, "attention") or len(head) < 3:
        return None
    *body, last = list(head)
    pool, flatten, *rest = body
    pooled = isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
    if not (pooled and isinstance(flatten, nn.Flatten) and isinstance(last, nn.Linear)):
        return None
    if not all(isinstance(m, nn.Dropout) for m in rest):
        return None
    return nn.Sequential(*body), last


def closed_form_reason(model: nn.Module) -> str | None:
    """None when the engine can compute Grad-CAM++ for `model`; else why not (for manifests and logs)."""
    if linear_head(model) is None:
        return (
            f"{type(model).__name__}'s head is not global-average-pool then one linear layer: "
            "Grad-CAM++ needs the PyTorch checkpoint (sperm-edge explain --torch)"
        )
    return None


def explained_layer(model: nn.Module) -> str:
    """What Grad-CAM++ explains in `model`, in words: the CBAM output or the backbone's last stage."""
    return "attention (CBAM)" if type(getattr(model, "attention", None)).__name__ == "CBAM" else "backbone last stage"


class GradCamPlusPlusHead(nn.Module):
    """Grad-CAM++ maps of every class from the explained feature map, for a fixed feature grid H x W."""

    def __init__(self, linear: nn.Linear, grid: tuple[int, int]) -> None:
        super().__init__()
        height, width = grid
        self.grid = (height, width)
        self.channels = linear.in_features
        area = float(height * width)
        g = linear.weight.detach().double() / area  # K x C, the gradient at every position
        # numerator and denominator scaled per class by 1 / max_k g_ck^2 (the same weights in exact
        # arithmetic): the constants stay near 1 instead of 1e-8, so FP16 engines keep them
        scale = 1.0 / (g**2).amax(dim=1, keepdim=True).clamp(min=1e-30)
        self.register_buffer("numerator", (area * g.clamp(min=0) * g**2 * scale).float(), persistent=False)
        self.register_buffer("g2x2", (2.0 * g**2 * scale).float(), persistent=False)
        self.register_buffer("g3", (g**3 * scale).float(), persistent=False)
        self.register_buffer("eps", (GRADCAM_PP_EPS * scale).float(), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, K, H, W]."""
        height, width = self.grid
        sums = features.sum(dim=(2, 3)).unsqueeze(1)  # N x 1 x C
        weights = self.numerator / (self.g2x2 + sums * self.g3 + self.eps)  # N x K x C
        flat = features.reshape(-1, self.channels, height * width)
        cam = torch.relu(torch.matmul(weights, flat))  # N x K x HW
        return cam.reshape(-1, self.numerator.shape[0], height, width)


class CamClassifier(nn.Module):
    """A pool-then-linear classifier that also returns its Grad-CAM++ maps and pooled features.

    `img_size` fixes the feature grid (one dry run finds it). Raises ValueError for a model
    whose head is not pool-then-linear (see `closed_form_reason`).
    """

    def __init__(self, model: nn.Module, img_size: int) -> None:
        super().__init__()
        parts = linear_head(model)
        if parts is None:
            raise ValueError(closed_form_reason(model))
        self.model = model
        self.pool, self.linear = parts
        was_training = model.training
        model.eval()
        with torch.no_grad():
            param = next(model.parameters())
            grid = model.attention(model.backbone(torch.zeros(1, 3, img_size, img_size, device=param.device)))
        model.train(was_training)
        setattr(self, CAM_MODULE, GradCamPlusPlusHead(self.linear, tuple(grid.shape[-2:])))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        explained = self.model.attention(self.model.backbone(x))
        features = self.pool(explained)
        return self.linear(features), getattr(self, CAM_MODULE)(explained), features
