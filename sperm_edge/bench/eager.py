"""PyTorch eager in NCHW: the paper-style way to run the model, the reference row of every benchmark.

The runtime's `TorchBackend` runs the checkpoint in channels_last (NHWC), which oneDNN's
convolutions prefer on x86; papers run `model(x)` on a contiguous NCHW tensor. This subclass
turns the weights back to NCHW and feeds the input as it comes, and nothing else, so the two
PyTorch rows differ only by memory format.
"""

from __future__ import annotations

import numpy as np

from sperm_edge.engines.base import InputSpec, Outputs
from sperm_edge.engines.torch_backend import TorchBackend


class EagerTorchBackend(TorchBackend):
    """The retained checkpoint under `torch.inference_mode`, NCHW weights and input, no compilation."""

    name = "torch-eager"

    def _activate_impl(self) -> InputSpec:
        import torch

        spec = super()._activate_impl()
        classifier = getattr(self._model, "model", self._model)  # the plain model, without the cam outputs
        self._model = classifier.to(memory_format=torch.contiguous_format)
        self.output_names = ("logits",)
        return spec

    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        import torch

        with torch.inference_mode():
            return Outputs(self._model(torch.from_numpy(batch).to(self._device)).float().cpu().numpy())
