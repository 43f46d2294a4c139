"""PyTorch eager on the bundle's retained checkpoint: the reference the other engines are compared with.

A pool-then-linear model runs as `CamClassifier`, so it returns the same named outputs as the
exported engines (logits, Grad-CAM++ maps, pooled features) from one forward pass.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sperm_edge.engines.base import OUTPUTS, Backend, InputSpec, Outputs, missing
from sperm_edge.errors import SpermEdgeError

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """The checkpoint's model in eval mode under `torch.inference_mode`, on CPU or CUDA."""

    name = "torch"

    def __init__(self, checkpoint_stem: str | Path, device: str = "auto", threads: int | None = None) -> None:
        super().__init__("fp32")
        self.checkpoint_stem = Path(checkpoint_stem)
        self.device_name = device
        self.threads = threads
        self._model = None
        self._device = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False, "PyTorch is not installed; pip install torch timm (or the full sperm-edge install)"
        return True, ""

    def _activate_impl(self) -> InputSpec:
        ok, why = self.available()
        if not ok:
            raise missing("PyTorch", why)
        import torch

        from sperm_edge.model.cam_head import CamClassifier, closed_form_reason
        from sperm_edge.model.checkpoint import load_checkpoint
        from sperm_edge.model.inference import pick_device

        if self.threads:
            torch.set_num_threads(self.threads)
        checkpoint = load_checkpoint(self.checkpoint_stem)
        self._device = pick_device(self.device_name)
        size = checkpoint.card.preprocess.img_size
        try:
            model = checkpoint.build_model().eval()
        except RuntimeError as err:
            raise SpermEdgeError(f"cannot build the model of {self.checkpoint_stem}: {err}") from err
        if closed_form_reason(model) is None:
            model, self.output_names = CamClassifier(model, size).eval(), OUTPUTS
        else:
            self.output_names = ("logits",)
        self._model = model.to(self._device).to(memory_format=torch.channels_last)
        log.info("torch: %s on %s", checkpoint.card.arch, self._device)
        return InputSpec("input", (-1, 3, size, size), "float32")

    def _deactivate_impl(self) -> None:
        self._model = None

    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self._device).contiguous(memory_format=torch.channels_last)
            out = self._model(x)
            values = out if isinstance(out, tuple) else (out,)
            return Outputs.from_named(
                {k: v.float().cpu().numpy() for k, v in zip(self.output_names, values, strict=True)}
            )

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self._device)}
