"""Drop-in replacements for ``torch.optim`` whose steps run as fused kernels."""

from .sgd import SGD

__all__ = ["SGD"]
