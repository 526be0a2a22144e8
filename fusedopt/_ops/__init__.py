"""Python face of the custom ops ``torch.ops.fusedopt.*``: fake implementations for torch.compile and
typed wrappers, one module per op family. The schemas are defined in csrc/schemas/<family>.cpp."""

from . import clipping  # noqa: F401
from . import optimizers  # noqa: F401
from . import adam  # noqa: F401
from . import rmsprop_adagrad  # noqa: F401
from . import batch_norm  # noqa: F401
from . import dropout  # noqa: F401
