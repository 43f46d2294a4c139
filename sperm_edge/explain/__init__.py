"""Grad-CAM++ explanations of crops: the explainer, overlays, a background worker and quality scores.

Importing this package does not import torch; the explainer does, when it is opened. Shared by
the runtime (`--explain flagged`, `sperm-edge explain`) and the benchmarks.
"""

from sperm_edge.explain.gradcam import GradCamExplainer, require_torch
from sperm_edge.explain.maps import Explanation, heat_statistics
from sperm_edge.explain.overlay import overlay, panel, write_explanation
from sperm_edge.explain.worker import ExplainJob, ExplainWorker

__all__ = [
    "ExplainJob",
    "ExplainWorker",
    "Explanation",
    "GradCamExplainer",
    "heat_statistics",
    "overlay",
    "panel",
    "require_torch",
    "write_explanation",
]
