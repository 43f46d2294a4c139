"""Grad-CAM++ (Chattopadhyay et al., WACV 2018) of a crop, from the bundle's retained PyTorch checkpoint.

A thin wrapper around pytorch-grad-cam's `GradCAMPlusPlus`; with `stage`, its `LayerCAM` on that block
stage's output instead (the reference of a bundle's LayerCAM explainer). Grad-CAM++'s target layer is the model's
`attention` module: the CBAM output, or for models without CBAM the identity over the backbone's
last convolutional stage, which is the same feature map. Only that layer's gradient is needed,
so the backbone runs without autograd and only the CBAM and the head are differentiated: the
explanation costs little more than one forward pass.

The explainer is a context manager: entering registers the hooks (loading the weights the first
time), leaving removes every hook (`GradCAMPlusPlus.__exit__`). Each explanation runs in a
`with torch.inference_mode(False), torch.enable_grad():` block (the caller may be in inference
mode) and drops its autograd graph afterwards, so a long run does not accumulate memory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from sperm_edge.errors import SpermEdgeError
from sperm_edge.explain.maps import Explanation, cam_to_image, heat_statistics
from sperm_edge.preprocess import PreprocessSpec, preprocess_batch
from sperm_edge.tta import dihedral_view, undo_dihedral_view

log = logging.getLogger(__name__)

TORCH_MISSING = (
    "explanations need PyTorch and grad-cam, which are not installed here "
    "(pip install torch timm grad-cam, or the full sperm-edge install); classification works without them"
)


def require_torch() -> None:
    """Raise a clear SpermEdgeError when the explanation stack is not installed."""
    try:
        import pytorch_grad_cam  # noqa: F401
        import torch  # noqa: F401
    except ImportError as err:
        raise SpermEdgeError(TORCH_MISSING) from err


class GradCamExplainer:
    """Grad-CAM++ heatmaps of RGB crops, with the model and preprocessing of a checkpoint.

    `threads`, when given, sets PyTorch's intra-op threads. That setting belongs to the whole
    process (`torch.set_num_threads`), so pass it only where nothing else in the process runs
    torch (not beside the torch backend); None leaves PyTorch's setting alone.
    """

    def __init__(
        self, checkpoint_stem: str | Path, threads: int | None = None, device: str = "cpu", stage: int | None = None
    ) -> None:
        self.checkpoint_stem = Path(checkpoint_stem)
        self.stage = stage  # None: Grad-CAM++ on `attention`; else LayerCAM on `backbone.blocks[stage]`
        self.method = "Grad-CAM++" if stage is None else "LayerCAM"
        self.threads = threads
        self.device_name = device
        self.classes: list[str] = []
        self.spec: PreprocessSpec | None = None
        self.layer = ""
        self._model = None
        self._cam = None
        self._device = None

    def __enter__(self) -> GradCamExplainer:
        """Load the model (once per explainer) and register Grad-CAM++'s hooks (every time)."""
        require_torch()
        from pytorch_grad_cam import GradCAMPlusPlus, LayerCAM

        if self._cam is not None:
            raise SpermEdgeError("this explainer is already open")
        if self._model is None:
            self._load()
        if self.stage is None:
            self._cam = GradCAMPlusPlus(model=self._model, target_layers=[self._model.model.attention])
        else:
            self._cam = LayerCAM(model=self._model, target_layers=[self._model.backbone.blocks[self.stage]])
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hooks (the model stays loaded for the next `with` block)."""
        if self._cam is not None:
            cam, self._cam = self._cam, None
            cam.outputs = None
            cam.__exit__(None, None, None)  # BaseCAM's context exit: ActivationsAndGradients.release()

    def _load(self) -> None:
        import torch

        from sperm_edge.explain._feature_grad import FeatureGradModel
        from sperm_edge.model.cam_head import explained_layer
        from sperm_edge.model.checkpoint import load_checkpoint

        if self.threads and torch.get_num_threads() != self.threads:
            log.info("PyTorch intra-op threads: %d -> %d (process-wide)", torch.get_num_threads(), self.threads)
            torch.set_num_threads(self.threads)
        checkpoint = load_checkpoint(self.checkpoint_stem)
        self.classes, self.spec = checkpoint.card.classes, checkpoint.card.preprocess
        model = checkpoint.build_model()
        self._device = torch.device(self.device_name)
        if self.stage is None:
            for param in model.parameters():
                param.requires_grad_(False)
            self._model = FeatureGradModel(model).to(self._device).eval()
            self.layer = explained_layer(model)
        else:  # the gradient runs through the backbone's later stages: the whole model is differentiated
            self._model = model.to(self._device).eval()
            self.layer = f"backbone.blocks.{self.stage}"

    @property
    def model(self):
        """The wrapped classifier (normalised input -> logits), for pytorch-grad-cam's metrics."""
        return self._model

    def input_tensor(self, rgb: np.ndarray):
        """The preprocessed crop as a 1 x 3 x S x S tensor on the explainer's device."""
        import torch

        return torch.from_numpy(preprocess_batch([rgb], self.spec)).to(self._device)

    @property
    def hook_count(self) -> int:
        """Hooks this explainer holds on the model (0 once closed)."""
        return len(self._cam.activations_and_grads.handles) if self._cam is not None else 0

    def explain(self, rgb: np.ndarray, target: int | str | None = None, view: int = 0) -> Explanation:
        """Heatmap of an RGB uint8 crop for `target` (class index or name; default: the predicted class), the
        network shown the crop in dihedral view `view` (`sperm_edge.tta`) and the map turned back onto the crop."""
        if self._cam is None:
            raise SpermEdgeError("the explainer is not open: use it in a `with` block")
        import torch
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        if isinstance(target, str):
            if target not in self.classes:
                raise SpermEdgeError(f"unknown class {target!r}; the model's classes: {', '.join(self.classes)}")
            target = self.classes.index(target)
        start = time.perf_counter()
        targets = None if target is None else [ClassifierOutputTarget(int(target))]
        # the caller may be in inference mode (a runtime thread): leave it, and enable autograd, for this block
        with torch.inference_mode(False), torch.enable_grad():
            x = dihedral_view(self.input_tensor(rgb), view).contiguous()
            try:
                cam = np.ascontiguousarray(undo_dihedral_view(self._cam(input_tensor=x, targets=targets)[0], view))
                logits = self._cam.outputs.detach()
            finally:
                self._cam.outputs = None  # drop this call's autograd graph (GradCAM keeps it)
                self._cam.activations_and_grads.clear()  # public since grad-cam 1.5.7 (pinned)
        probs = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
        index = int(np.argmax(probs)) if target is None else int(target)
        heat = cam_to_image(cam, rgb.shape[:2])
        latency = (time.perf_counter() - start) * 1000.0
        return Explanation(
            heat,
            index,
            self.classes[index],
            probs,
            self.classes,
            self.layer,
            latency,
            heat_statistics(heat),
            input_cam=cam,
            method=self.method,
        )
