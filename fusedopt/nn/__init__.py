"""Drop-in replacements for torch.nn modules, backed by fusedopt's kernels."""

from . import functional  # noqa: F401
from .dropout import Dropout, Dropout1d, Dropout2d, Dropout3d  # noqa: F401
