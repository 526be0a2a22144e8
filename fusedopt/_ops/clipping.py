"""Clipping ops: fake implementations for torch.compile and typed wrappers. Schemas are in
csrc/schemas/clipping.cpp."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.register_fake("fusedopt::total_norm")
def _total_norm_fake(tensors, norm_type):
    if len(tensors) == 0:
        raise RuntimeError("fusedopt.total_norm: tensors is empty; expected at least one tensor")
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    return tensors[0].new_empty((), dtype=dtype)


@torch.library.register_fake("fusedopt::clip_by_total_norm_")
def _clip_by_total_norm_fake(tensors, total_norm, max_norm) -> None:
    return None


def total_norm(tensors: list[Tensor], norm_type: float) -> Tensor:
    """The norm_type-norm of all elements of `tensors` (one device, dense, any float dtypes), a 0-dim
    float32 tensor on their device (float64 if any tensor is float64)."""
    return torch.ops.fusedopt.total_norm(tensors, float(norm_type))


def clip_by_total_norm_(tensors: list[Tensor], total_norm: Tensor, max_norm: float) -> None:
    """Multiply every tensor in place by clamp(max_norm / (total_norm + 1e-6), max=1), on the device."""
    torch.ops.fusedopt.clip_by_total_norm_(tensors, total_norm, float(max_norm))
