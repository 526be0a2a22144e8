"""Dropout ops: fake implementations, autograd, and typed wrappers. Schemas are in
csrc/schemas/dropout.cpp; the mask scheme is described in csrc/include/fusedopt/dropout.h."""

from __future__ import annotations

import torch
from torch import Tensor


def mask_bytes(numel: int, group_size: int = 1) -> int:
    """Bytes of the packed mask: one bit per group of ``group_size`` elements."""
    return (numel // group_size + 7) // 8


@torch.library.register_fake("fusedopt::dropout")
def _dropout_fake(input, p, group_size=1, *, seed=None, offset=None):
    output = input.new_empty(input.shape)  # contiguous
    mask = input.new_empty((mask_bytes(input.numel(), group_size),), dtype=torch.uint8)
    return output, mask


@torch.library.register_fake("fusedopt::dropout_")
def _dropout_inplace_fake(input, p, group_size=1, *, seed=None, offset=None):
    return input.new_empty((mask_bytes(input.numel(), group_size),), dtype=torch.uint8)


@torch.library.register_fake("fusedopt::dropout_backward")
def _dropout_backward_fake(grad_output, mask, p, group_size=1):
    return grad_output.new_empty(grad_output.shape)


@torch.library.register_fake("fusedopt::_philox4x32_10")
def _philox_fake(counters, keys, torch_engine=False):
    return torch.empty_like(counters, memory_format=torch.contiguous_format)


# Autograd: only the packed mask (numel / 8 bytes) is saved for backward; the gradient of the backward
# (linear in grad_output) is the backward again.
def _dropout_setup_context(ctx, inputs, keyword_only_inputs, output):
    _, p, group_size = inputs
    ctx.p, ctx.group_size = p, group_size
    ctx.save_for_backward(output[1])


def _dropout_backward_rule(ctx, grad_output, grad_mask):
    (mask,) = ctx.saved_tensors
    return torch.ops.fusedopt.dropout_backward(grad_output, mask, ctx.p, ctx.group_size), None, None


torch.library.register_autograd("fusedopt::dropout", _dropout_backward_rule,
                                setup_context=_dropout_setup_context)


def _dropout_backward_setup_context(ctx, inputs, output):
    _, mask, p, group_size = inputs
    ctx.p, ctx.group_size = p, group_size
    ctx.save_for_backward(mask)


def _dropout_backward_backward(ctx, grad):
    (mask,) = ctx.saved_tensors
    return torch.ops.fusedopt.dropout_backward(grad, mask, ctx.p, ctx.group_size), None, None, None


torch.library.register_autograd("fusedopt::dropout_backward", _dropout_backward_backward,
                                setup_context=_dropout_backward_setup_context)


# Compiled graphs merge calls with equal arguments unless an op is known to be random. torch 2.14 reads
# the ops' nondeterministic_seeded tag (csrc/schemas/dropout.cpp) for that; earlier versions only know
# their own random ops, and would give two dropout calls on one tensor the same mask (R-Drop, for
# example): there the ops are also registered as ordered side effects, which nothing merges or drops.
if torch.torch_version.TorchVersion(torch.__version__) < (2, 14):
    from torch._higher_order_ops.effects import _EffectType

    for _op in (torch.ops.fusedopt.dropout.default, torch.ops.fusedopt.dropout_.default):
        torch.library._register_effectful_op(_op, _EffectType.ORDERED)


class _DropoutInplace(torch.autograd.Function):
    """In-place dropout (a mutable op cannot use register_autograd): input is marked dirty and only the
    mask is saved."""

    @staticmethod
    def forward(ctx, input, p, group_size, seed, offset):
        mask = torch.ops.fusedopt.dropout_(input, p, group_size, seed=seed, offset=offset)
        ctx.mark_dirty(input)
        ctx.save_for_backward(mask)
        ctx.p, ctx.group_size = p, group_size
        return input

    @staticmethod
    def backward(ctx, grad_output):
        (mask,) = ctx.saved_tensors
        return (torch.ops.fusedopt.dropout_backward(grad_output, mask, ctx.p, ctx.group_size),
                None, None, None, None)


def dropout(input: Tensor, p: float, group_size: int = 1, *, seed: int | None = None,
            offset: int | None = None) -> tuple[Tensor, Tensor]:
    """(output, packed mask); differentiable in input. See csrc/schemas/dropout.cpp."""
    return torch.ops.fusedopt.dropout(input, p, group_size, seed=seed, offset=offset)


def dropout_(input: Tensor, p: float, group_size: int = 1, *, seed: int | None = None,
             offset: int | None = None) -> Tensor:
    """In-place dropout of input, differentiable; returns input."""
    return _DropoutInplace.apply(input, p, group_size, seed, offset)


def dropout_backward(grad_output: Tensor, mask: Tensor, p: float, group_size: int = 1) -> Tensor:
    return torch.ops.fusedopt.dropout_backward(grad_output, mask, p, group_size)
