"""Dropout ops: fake implementations and typed wrappers. Schemas are in csrc/schemas/dropout.cpp, the
mask scheme in csrc/include/fusedopt/dropout.h, and their autograd (only the packed mask is saved) in
csrc/common/dropout_autograd.cpp."""

from __future__ import annotations

import torch
from torch import Tensor


def mask_bytes(numel: int, group_size: int = 1) -> int:
    """Bytes of the packed mask: one bit per group of ``group_size`` elements."""
    return (numel // group_size + 7) // 8


@torch.library.register_fake("fusedopt::dropout")
def _dropout_fake(input, p, group_size=1, *, seed=None, offset=None, keep_layout=False):
    if keep_layout:  # input's strides, or those torch's empty_like infers (csrc/common/dropout_checks.h)
        output = torch.empty_like(input, memory_format=torch.preserve_format)
    else:
        output = input.new_empty(input.shape)  # contiguous
    mask = input.new_empty((mask_bytes(input.numel(), group_size),), dtype=torch.uint8)
    return output, mask


@torch.library.register_fake("fusedopt::dropout_")
def _dropout_inplace_fake(input, p, group_size=1, *, seed=None, offset=None, keep_layout=False):
    return input.new_empty((mask_bytes(input.numel(), group_size),), dtype=torch.uint8)


@torch.library.register_fake("fusedopt::dropout_backward")
def _dropout_backward_fake(grad_output, mask, p, group_size=1, *, output_strides=None):
    if output_strides is not None:
        return grad_output.new_empty_strided(grad_output.shape, output_strides)
    return grad_output.new_empty(grad_output.shape)


@torch.library.register_fake("fusedopt::_philox4x32_10")
def _philox_fake(counters, keys, torch_engine=False):
    return torch.empty_like(counters, memory_format=torch.contiguous_format)


# Compiled graphs merge calls with equal arguments unless an op is known to be random. torch 2.14 reads
# the ops' nondeterministic_seeded tag (csrc/schemas/dropout.cpp) for that; earlier versions only know
# their own random ops, and would give two dropout calls on one tensor the same mask (R-Drop, for
# example): there the ops are also registered as ordered side effects, which nothing merges or drops.
if torch.torch_version.TorchVersion(torch.__version__) < (2, 14):
    from torch._higher_order_ops.effects import _EffectType

    for _op in (torch.ops.fusedopt.dropout.default, torch.ops.fusedopt.dropout_.default):
        torch.library._register_effectful_op(_op, _EffectType.ORDERED)


def dropout(input: Tensor, p: float, group_size: int = 1, *, seed: int | None = None,
            offset: int | None = None, keep_layout: bool = False) -> tuple[Tensor, Tensor]:
    """(output, packed mask); differentiable in input. See csrc/schemas/dropout.cpp."""
    return torch.ops.fusedopt.dropout(input, p, group_size, seed=seed, offset=offset, keep_layout=keep_layout)


def dropout_(input: Tensor, p: float, group_size: int = 1, *, seed: int | None = None,
             offset: int | None = None, keep_layout: bool = False) -> Tensor:
    """In-place dropout of input, differentiable; returns input."""
    torch.ops.fusedopt.dropout_(input, p, group_size, seed=seed, offset=offset, keep_layout=keep_layout)
    return input


def dropout_backward(grad_output: Tensor, mask: Tensor, p: float, group_size: int = 1, *,
                     output_strides: tuple[int, ...] | None = None) -> Tensor:
    return torch.ops.fusedopt.dropout_backward(grad_output, mask, p, group_size, output_strides=output_strides)
