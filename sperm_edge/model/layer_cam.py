"""LayerCAM on a finer feature grid, in the forward pass: the gradient back to a block stage, written as forward ops.

The shipped Grad-CAM++ (`cam_head`) explains the last feature grid (7 x 7 at 224 px): one cell covers
32 pixels, too coarse to put the heat on a sperm head rather than on the middle of the crop. LayerCAM
(Jiang et al., IEEE TIP 2021) on the output `A` of an earlier block stage (14 x 14) does, as
`benchmarks/results/explanations/explain_levers.md` measured on real crops:

    cam_c = relu(sum_k relu(d logit_c / d A_k) * A_k)        (pytorch-grad-cam's LayerCAM, before scaling)

An engine has no backward pass, but in eval mode everything after `A` is a chain whose vector-Jacobian
product is itself a forward computation: each convolution's transpose is a `ConvTranspose` with the
same weights, batch norm is a per-channel scale, ReLU and ReLU6 are masks of their inputs, a residual
adds its branch's gradient to the shortcut's, global average pooling spreads the linear layer's
weights evenly, and CBAM's gates are sigmoids (derivative `s (1 - s)`), channel and spatial means
(spread evenly) and maxima (to the maximal entries, shared among ties as torch shares them).
`LayerCamExplainer` runs the tail of the network while it records those factors, then runs the chain
backwards for every class at once, so one forward pass returns `(logits, cam)`, the map of the
class asked for. `tests/model/test_layer_cam.py` proves it equal to pytorch-grad-cam's `LayerCAM` on
the same layer; export checks it again on validation crops.

Covered: timm EfficientNet-Lite stages (`InvertedResidual`, `DepthwiseSeparableConv` without
squeeze-excitation, `Conv2dSame` or frozen zero padding, `BatchNormAct2d` with ReLU/ReLU6), the final
1 x 1 convolution, CBAM or no attention, and a pool-then-linear head. Anything else (SiLU, squeeze-
excitation: EfficientNet-B0) has no closed form here: `UnsupportedLayer` says which layer, and the bundle
keeps the Grad-CAM++ map.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sperm_edge.model.cam_head import linear_head
from sperm_edge.model.cbam import CBAM

Backward = Callable[[torch.Tensor], torch.Tensor]  # gradient [N, K, C, H, W] -> gradient at the input


class UnsupportedLayer(ValueError):
    """A module whose backward pass has no forward form here."""


def _per_class(op: Callable[[torch.Tensor], torch.Tensor], grad: torch.Tensor) -> torch.Tensor:
    """Apply a batch op to [N, K, C, H, W] by folding the class axis into the batch."""
    classes = grad.shape[1]
    out = op(grad.reshape(-1, *grad.shape[2:]))
    return out.reshape(-1, classes, *out.shape[1:])


def _conv(conv: nn.Conv2d, x: torch.Tensor, tape: list[Backward]) -> torch.Tensor:
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    if isinstance(conv, Conv2dSame):
        pad = pad_same_arg(list(x.shape[-2:]), list(conv.weight.shape[-2:]), list(conv.stride), list(conv.dilation))
        x = _pad(tuple(pad), x, tape)
    in_size = x.shape[-2:]
    padding = (0, 0) if isinstance(conv, Conv2dSame) else conv.padding
    if isinstance(padding, str):
        raise UnsupportedLayer(f"convolution with padding={padding!r}")
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)
    spans = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]  # kernel extent - 1
    if max(conv.stride) == 1 and all(span >= p for span, p in zip(spans, padding, strict=True)):
        # a stride-1 transpose is a plain convolution with the kernel flipped and its in/out channels swapped,
        # which engines run on their fast convolution paths (ORT's grouped ConvTranspose is far slower)
        groups = conv.groups
        weight = conv.weight.reshape(groups, -1, *conv.weight.shape[1:]).transpose(1, 2)
        weight = weight.reshape(-1, *weight.shape[2:]).flip(-1, -2)
        flipped_pad = tuple(span - p for span, p in zip(spans, padding, strict=True))

        def backward(grad: torch.Tensor) -> torch.Tensor:
            return _per_class(lambda g: F.conv2d(g, weight, None, 1, flipped_pad, conv.dilation, groups), grad)

    else:  # output_padding: the input rows and columns the strided convolution never reached
        extra = tuple(
            int(in_size[i]) - ((int(y.shape[2 + i]) - 1) * conv.stride[i] - 2 * padding[i] + spans[i] + 1)
            for i in range(2)
        )

        def backward(grad: torch.Tensor) -> torch.Tensor:
            return _per_class(
                lambda g: F.conv_transpose2d(
                    g, conv.weight, None, conv.stride, padding, extra, conv.groups, conv.dilation
                ),
                grad,
            )

    tape.append(backward)
    return y


def _pad(pad: tuple[int, ...], x: torch.Tensor, tape: list[Backward]) -> torch.Tensor:
    left, right, top, bottom = pad
    height, width = x.shape[-2:]
    tape.append(lambda grad: grad[..., top : top + height, left : left + width])
    return F.pad(x, list(pad))


def _activation(act: nn.Module, x: torch.Tensor, tape: list[Backward]) -> torch.Tensor:
    if isinstance(act, nn.Identity):
        return x
    if isinstance(act, nn.ReLU6):
        mask = ((x > 0) & (x < 6)).to(x.dtype)  # torch's hardtanh backward: zero at and beyond the bounds
        y = x.clamp(0, 6)
    elif isinstance(act, nn.ReLU):
        mask = (x > 0).to(x.dtype)
        y = x.clamp(min=0)
    else:
        raise UnsupportedLayer(f"activation {type(act).__name__}")
    tape.append(lambda grad: grad * mask.unsqueeze(1))
    return y


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, tape: list[Backward]) -> torch.Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    y = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)  # as the module
    tape.append(lambda grad: grad * scale[:, None, None])
    for name in ("drop", "act"):  # timm's BatchNormAct2d: dropout (identity in eval), then its activation
        if name in bn._modules:
            y = _walk(getattr(bn, name), y, tape)
    return y


def _block(block: nn.Module, x: torch.Tensor, tape: list[Backward]) -> torch.Tensor:
    """A timm InvertedResidual or DepthwiseSeparableConv: its layers in forward order, then the skip."""
    if getattr(block, "conv_s2d", None) is not None:
        raise UnsupportedLayer("space-to-depth stem in a block")
    order = ("conv_pw", "bn1", "conv_dw", "bn2", "aa", "se", "conv_pwl", "bn3")
    if type(block).__name__ == "DepthwiseSeparableConv":
        order = ("conv_dw", "bn1", "aa", "se", "conv_pw", "bn2")
    branch: list[Backward] = []
    y = x
    for name in order:
        y = _walk(getattr(block, name), y, branch)
    if not block.has_skip:
        tape.extend(branch)
        return y

    def backward(grad: torch.Tensor) -> torch.Tensor:
        through = grad
        for step in reversed(branch):
            through = step(through)
        return through + grad

    tape.append(backward)
    return y + x


def _cbam(cbam: CBAM, x: torch.Tensor, tape: list[Backward]) -> torch.Tensor:
    """CBAM's forward (`x * a(x)`, then `x1 * s(x1)`) and its exact backward."""
    mlp, spatial = cbam.channel.mlp, cbam.spatial.conv
    height, width = x.shape[-2:]
    mean, peak = x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    hidden_mean, hidden_peak = mlp[0](mean), mlp[0](peak)
    gate = torch.sigmoid(mlp[2](torch.relu(hidden_mean)) + mlp[2](torch.relu(hidden_peak)))  # N x C x 1 x 1
    x1 = x * gate
    peak_at = (x == peak).to(x.dtype)
    peak_at = peak_at / peak_at.sum(dim=(2, 3), keepdim=True)  # ties share the gradient, as in torch's amax
    pooled = torch.cat([x1.mean(dim=1, keepdim=True), x1.amax(dim=1, keepdim=True)], dim=1)
    spatial_gate = torch.sigmoid(spatial(pooled))  # N x 1 x H x W
    top_at = (x1 == pooled[:, 1:2]).to(x.dtype)
    top_at = top_at / top_at.sum(dim=1, keepdim=True)
    channels = x.shape[1]

    def through_mlp(grad: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        grad = _per_class(lambda g: F.conv_transpose2d(g, mlp[2].weight), grad) * (hidden > 0).to(x.dtype).unsqueeze(1)
        return _per_class(lambda g: F.conv_transpose2d(g, mlp[0].weight), grad)

    def backward(grad: torch.Tensor) -> torch.Tensor:
        slope = (spatial_gate * (1 - spatial_gate)).unsqueeze(1)
        pre_spatial = (grad * x1.unsqueeze(1)).sum(dim=2, keepdim=True) * slope
        pad = spatial.padding
        to_pooled = _per_class(lambda g: F.conv_transpose2d(g, spatial.weight, None, 1, pad), pre_spatial)
        to_mean_map, to_top = to_pooled[:, :, 0:1] / channels, to_pooled[:, :, 1:2] * top_at.unsqueeze(1)
        grad_x1 = grad * spatial_gate.unsqueeze(1) + to_mean_map + to_top
        pre_gate = (grad_x1 * x.unsqueeze(1)).sum(dim=(3, 4), keepdim=True) * (gate * (1 - gate)).unsqueeze(1)
        to_mean, to_peak = through_mlp(pre_gate, hidden_mean), through_mlp(pre_gate, hidden_peak)
        return grad_x1 * gate.unsqueeze(1) + to_mean / (height * width) + to_peak * peak_at.unsqueeze(1)

    tape.append(backward)
    return x1 * spatial_gate


def _walk(module: nn.Module, x: torch.Tensor, tape: list[Backward]) -> torch.Tensor:
    """`module(x)` in eval mode, recording on `tape` the backward of each step."""
    if isinstance(module, nn.Sequential):
        for child in module:
            x = _walk(child, x, tape)
        return x
    if isinstance(module, nn.ZeroPad2d):
        return _pad(tuple(module.padding), x, tape)
    if isinstance(module, nn.Conv2d):
        return _conv(module, x, tape)
    if isinstance(module, nn.BatchNorm2d):
        return _batch_norm(module, x, tape)
    if isinstance(module, (nn.Identity, nn.Dropout)):
        return x
    if isinstance(module, (nn.ReLU, nn.ReLU6)):
        return _activation(module, x, tape)
    if isinstance(module, CBAM):
        return _cbam(module, x, tape)
    if type(module).__name__ in ("InvertedResidual", "DepthwiseSeparableConv"):
        return _block(module, x, tape)
    raise UnsupportedLayer(f"{type(module).__name__}")


def _strided_stages(model: nn.Module) -> list[int]:
    blocks = getattr(getattr(model, "backbone", None), "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        return []
    convs = [[m for m in stage[0].modules() if isinstance(m, nn.Conv2d)] for stage in blocks]
    return [i for i, found in enumerate(convs) if any(max(conv.stride) > 1 for conv in found)]


def fine_stage(model: nn.Module) -> int | None:
    """The block stage before the last stride-2 one (14 x 14 at 224 px for EfficientNets), or None."""
    strided = _strided_stages(model)
    return strided[-1] - 1 if strided and strided[-1] > 0 else None


def fine_stages(model: nn.Module) -> list[int]:
    """Every block stage on the grid before the last stride-2 one (EfficientNet-Lite0: blocks 3 and 4, 14 x 14)."""
    strided = _strided_stages(model)
    if not strided or strided[-1] == 0:
        return []
    first = strided[-2] if len(strided) > 1 else 0
    return list(range(first, strided[-1]))


def _tail(model: nn.Module, stage: int) -> tuple[nn.Sequential, nn.Sequential]:
    backbone = model.backbone
    blocks = backbone.blocks
    front = nn.Sequential(backbone.conv_stem, backbone.bn1, *blocks[: stage + 1])
    return front, nn.Sequential(*blocks[stage + 1 :], backbone.conv_head, backbone.bn2, model.attention)


class LayerCamExplainer(nn.Module):
    """`(logits, cam)` from one forward pass: LayerCAM, on block stage `stage`'s output, of each input's `target` class.

    `forward(x, target)` takes the images [N, 3, S, S] and one class index per image [N] (int64);
    `cam` is [N, h, w] after LayerCAM's ReLU, before any scaling; `logits` are the model's own.
    One class per image keeps the backward chain to a single pass (all classes at once cost K of them).
    Raises `UnsupportedLayer` for a model outside the covered layers (see the module docstring): here when it is
    not an EfficientNet with a pool-then-linear head, on the first forward pass when a layer has no closed form.
    """

    def __init__(self, model: nn.Module, stage: int | None = None) -> None:
        super().__init__()
        stage = fine_stage(model) if stage is None else stage
        parts = linear_head(model)
        if stage is None or parts is None:
            raise UnsupportedLayer(f"{type(model).__name__} is not an EfficientNet with a pool-then-linear head")
        model.eval()
        self.stage = stage
        self.front, self.tail = _tail(model, stage)
        self.pool, self.linear = parts

    @property
    def layer(self) -> str:
        """The explained layer, named as in the model (`backbone.blocks.4`)."""
        return f"backbone.blocks.{self.stage}"

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activations = self.front(x)
        tape: list[Backward] = []
        explained = _walk(self.tail, activations, tape)
        logits = self.linear(self.pool(explained))
        area = explained.shape[-2] * explained.shape[-1]
        seed = (self.linear.weight[target] / area)[:, None, :, None, None]  # N x 1 x C x 1 x 1: d logit / d A
        grad = seed * torch.ones_like(explained).unsqueeze(1)
        for step in reversed(tape):
            grad = step(grad)
        cam = torch.relu((torch.relu(grad[:, 0]) * activations).sum(dim=1))
        return logits, cam
