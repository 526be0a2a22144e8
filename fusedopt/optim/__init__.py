"""Drop-in replacements for ``torch.optim`` whose steps run as fused kernels."""

from .adam import Adam, AdamW
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW"]
