"""Drop-in replacements for ``torch.nn`` modules whose forward and backward run as fused kernels, and
``fusedopt.nn.utils`` (gradient clipping)."""

from . import functional, utils
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, SyncBatchNorm
from .convert import MODULE_MAP, convert_modules
from .dropout import Dropout, Dropout1d, Dropout2d, Dropout3d

__all__ = ["functional", "utils", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm",
           "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "MODULE_MAP", "convert_modules"]
