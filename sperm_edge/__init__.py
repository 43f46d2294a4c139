"""sperm-edge: attention-guided sperm morphology classification, from training to the bench."""

__version__ = "0.1.0"
