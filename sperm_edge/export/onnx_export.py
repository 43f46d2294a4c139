"""PyTorch -> FP32 ONNX with a dynamic batch axis.

Exporter choice: torch's TorchScript exporter (`dynamo=False`) at opset 17. The dynamo exporter at
opset 18+ writes ReduceMax's axes as an input, which ONNX Runtime's `quant_pre_process` symbolic
shape inference cannot follow through CBAM's channel-max pooling, so the INT8 step would fail.

TF-ported backbones (timm `tf_efficientnet_lite0`) pad "SAME" at run time from the input's shape,
which exports as ~100 Shape/Gather/Ceil/Pad nodes. The input size is fixed by the preprocessing
spec, so the export first swaps each such convolution for a constant zero-pad plus a plain
convolution (same weights, same result), which ORT then fuses into the convolution's own pads.

A model whose head is pool-then-linear is exported through `CamClassifier`: outputs `logits`,
`cam` (Grad-CAM++ of every class on the feature grid, closed form) and `features` (pooled), in
that order, all from the same activations. Other models export `logits` only and say why.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from sperm_edge.errors import SpermEdgeError

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "input"
TARGET_NAME = "target"
OUTPUT_NAME = "logits"
OUTPUT_NAMES = (OUTPUT_NAME, "cam", "features")
EXPLAINER_OUTPUTS = (OUTPUT_NAME, "cam")


@dataclass
class OnnxExport:
    """What was exported and how."""

    path: Path
    opset: int
    exporter: str
    input_name: str
    output_names: tuple[str, ...]
    static_padding: int  # convolutions whose run-time SAME padding became a constant pad
    seconds: float
    cam_unavailable: str | None = None  # why the model has no `cam` output (None: it has one)

    def describe(self) -> dict:
        info = {
            "opset": self.opset,
            "exporter": self.exporter,
            "input": self.input_name,
            "outputs": list(self.output_names),
            "dynamic_axes": {name: {"0": "batch"} for name in (self.input_name, *self.output_names)},
            "static_same_padding": self.static_padding,
        }
        if self.cam_unavailable:
            info["cam_unavailable"] = self.cam_unavailable
        return info


def _freeze_same_padding(model: nn.Module, img_size: int) -> tuple[nn.Module, int]:
    """A copy of `model` whose run-time SAME-padded convolutions pad by constants computed for `img_size`."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    model = copy.deepcopy(model).eval()
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        return lambda _module, args: sizes.__setitem__(name, tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    if not hooks:
        return model, 0
    with torch.no_grad():
        model(torch.zeros(1, 3, img_size, img_size))
    for hook in hooks:
        hook.remove()
    for name, (height, width) in sizes.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        pad = pad_same_arg([height, width], list(old.weight.shape[-2:]), list(old.stride), list(old.dilation))
        conv = nn.Conv2d(
            old.in_channels,
            old.out_channels,
            old.kernel_size,
            old.stride,
            0,
            old.dilation,
            old.groups,
            old.bias is not None,
        )
        conv.load_state_dict(old.state_dict())
        setattr(parent, child, nn.Sequential(nn.ZeroPad2d(pad), conv))
    return model, len(sizes)


def _trace(
    module: nn.Module, img_size: int, path: Path, outputs: tuple[str, ...], opset: int, target: bool = False
) -> None:
    """torch.onnx.export of `module` with a dynamic batch axis on every input and output (`target`: a second
    input, one class index per image)."""
    example = (torch.zeros(2, 3, img_size, img_size),)  # batch 2 so nothing specialises on batch 1
    inputs = [INPUT_NAME]
    if target:
        example, inputs = (*example, torch.zeros(2, dtype=torch.long)), [INPUT_NAME, TARGET_NAME]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        try:
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=inputs,
                output_names=list(outputs),
                dynamic_axes={name: {0: "batch"} for name in (*inputs, *outputs)},
                do_constant_folding=True,
            )
        except Exception as err:  # torch raises many error types from tracing and symbolic functions
            raise SpermEdgeError(f"ONNX export of the model failed: {err}") from err


def export_explainer_onnx(
    model: nn.Module, img_size: int, path: str | Path, stage: int | None = None, opset: int = OPSET
) -> str:
    """Write the LayerCAM explainer of `model` (`sperm_edge.model.layer_cam`) as FP32 ONNX.

    Inputs `input` (N x 3 x S x S) and `target` (N, int64: the class to explain); outputs `logits` and `cam`
    (N x h x w).

    `stage`: the block stage explained (default: the one before the last stride-2 stage). Returns the explained
    layer's name; raises `UnsupportedLayer` for a model it does not cover.
    """
    from sperm_edge.model.layer_cam import LayerCamExplainer

    frozen, _ = _freeze_same_padding(model.cpu().eval(), img_size)
    explainer = LayerCamExplainer(frozen, stage).eval()
    with torch.no_grad():  # a layer without a closed form says so here, not as a failed trace
        explainer(torch.zeros(1, 3, img_size, img_size), torch.zeros(1, dtype=torch.long))
    _trace(explainer, img_size, Path(path), EXPLAINER_OUTPUTS, opset, target=True)
    return explainer.layer


def export_onnx(
    model: nn.Module, img_size: int, path: str | Path, metadata: dict | None = None, opset: int = OPSET
) -> OnnxExport:
    """Write `model` (eval mode, CPU) as FP32 ONNX for N x 3 x img_size x img_size input with a dynamic N.

    Outputs `logits`, `cam`, `features` for a pool-then-linear head, else `logits` only.
    """
    from sperm_edge.model.cam_head import CamClassifier, closed_form_reason

    path = Path(path)
    start = time.perf_counter()
    frozen, padded = _freeze_same_padding(model.cpu().eval(), img_size)
    reason = closed_form_reason(frozen)
    if reason is None:
        frozen, outputs = CamClassifier(frozen, img_size).eval(), OUTPUT_NAMES
    else:
        log.warning("no cam output: %s", reason)
        outputs = (OUTPUT_NAME,)
    _trace(frozen, img_size, path, outputs, opset)
    if metadata:
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = f"sperm_edge.{key}", value if isinstance(value, str) else json.dumps(value)
        onnx.save(proto, str(path))
    seconds = time.perf_counter() - start
    log.info("exported %s (opset %d, %d convolutions with frozen SAME padding) in %.1f s", path, opset, padded, seconds)
    return OnnxExport(
        path=path,
        opset=opset,
        exporter=f"torch.onnx.export (TorchScript, dynamo=False), torch {torch.__version__}",
        input_name=INPUT_NAME,
        output_names=outputs,
        static_padding=padded,
        seconds=round(seconds, 2),
        cam_unavailable=reason,
    )
