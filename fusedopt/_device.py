"""Moving small tensors (scalars of GradScaler, norms, clip coefficients) between devices."""

from __future__ import annotations

import torch
from torch import Tensor


def to_device(t: Tensor, device: torch.device | str) -> Tensor:
    """t on device, without blocking the host where that is safe. Into a GPU's memory the copy is
    queued on the stream before any kernel that reads it. Into the CPU's it must finish first: with
    non_blocking=True torch returns pinned memory that the copy may not have filled yet, and the CPU
    ops read it at once (the scale and found_inf of a GradScaler on CUDA, or a norm taken there, for
    params on the CPU)."""
    return t.to(device, non_blocking=torch.device(device).type != "cpu")
