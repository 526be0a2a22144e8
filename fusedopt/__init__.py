"""fusedopt: fused C++/CUDA kernels for PyTorch training.

Drop-in replacements for torch's optimizers (``fusedopt.optim``) whose updates run as one fused kernel
per parameter group, on CPU and CUDA. The kernels are torch custom ops, ``torch.ops.fusedopt.*``.
"""

from ._extension import build_info, cpu_capability, load_extension

_C = load_extension()

from . import _ops  # noqa: E402  (registers fake implementations of the ops)
from . import memory  # noqa: E402
from . import nn  # noqa: E402
from . import optim  # noqa: E402

__version__ = build_info()["version"]

__all__ = ["nn", "optim", "memory", "build_info", "cpu_capability", "__version__"]
