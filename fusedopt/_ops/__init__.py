"""Python face of the custom ops ``torch.ops.fusedopt.*``: fake implementations for torch.compile and
typed wrappers, one module per op family. The schemas are defined in csrc/schemas/<family>.cpp."""

from . import optimizers  # noqa: F401
from . import dropout  # noqa: F401
