"""Batch norm ops: fake implementations for torch.compile and typed wrappers. Schemas are in
csrc/schemas/batch_norm.cpp, the autograd of batch_norm_train and batch_norm_elemt in
csrc/common/batch_norm_autograd.cpp (SyncBatchNorm's in fusedopt/nn/_batch_norm_autograd.py)."""

from __future__ import annotations

import torch
from torch import Tensor


def param_dtype(input: Tensor) -> torch.dtype:
    """dtype of statistics, weights and per-channel sums for an input of input.dtype."""
    return torch.float64 if input.dtype == torch.float64 else torch.float32


try:  # Tensor.suggest_memory_format() for fake tensors (torch 2.13 and later)
    from torch._prims_common import suggest_memory_format as _suggest_memory_format
except ImportError:  # older torch: the fake then says contiguous where the kernel keeps channels-last
    def _suggest_memory_format(input: Tensor) -> torch.memory_format:
        return torch.contiguous_format


def _output_like(input: Tensor) -> Tensor:
    # The kernels keep contiguous and channels-last inputs' layouts, and copy any other strides into
    # the format torch suggests for them (channels-last for a slice of a channels-last tensor), as
    # csrc/common/batch_norm_checks.cpp does.
    if input.is_contiguous():
        fmt = torch.contiguous_format
    elif input.dim() == 4 and input.is_contiguous(memory_format=torch.channels_last):
        fmt = torch.channels_last
    elif input.dim() == 5 and input.is_contiguous(memory_format=torch.channels_last_3d):
        fmt = torch.channels_last_3d
    elif input.dim() >= 4:
        fmt = _suggest_memory_format(input)
    else:
        fmt = torch.contiguous_format
    return torch.empty_like(input, memory_format=fmt)


def _per_channel(input: Tensor) -> Tensor:
    return input.new_empty((input.shape[1],), dtype=param_dtype(input))


@torch.library.register_fake("fusedopt::batch_norm_stats")
def _stats_fake(input):
    torch._check(input.dim() >= 2, lambda: "batch_norm_stats: input must have at least 2 dimensions")
    return _per_channel(input), _per_channel(input)


@torch.library.register_fake("fusedopt::batch_norm_elemt")
def _elemt_fake(input, weight, bias, mean, var, eps):
    return _output_like(input)


@torch.library.register_fake("fusedopt::batch_norm_backward_reduce")
def _backward_reduce_fake(grad_output, input, mean):
    return _per_channel(input), _per_channel(input)


@torch.library.register_fake("fusedopt::batch_norm_backward_elemt")
def _backward_elemt_fake(grad_output, input, weight, mean, var, sum_dy, sum_dy_xmu, count, eps):
    return _output_like(input)


@torch.library.register_fake("fusedopt::batch_norm_train")
def _train_fake(input, weight, bias, eps):
    torch._check(input.dim() >= 2, lambda: "batch_norm_train: input must have at least 2 dimensions")
    return _output_like(input), _per_channel(input), _per_channel(input)


@torch.library.register_fake("fusedopt::batch_norm_train_backward")
def _train_backward_fake(grad_output, input, weight, mean, var, eps):
    return _output_like(input), _per_channel(input), _per_channel(input)


@torch.library.register_fake("fusedopt::batch_norm_update_running_stats_")
def _update_running_stats_fake(running_mean, running_var, mean, var, count, momentum):
    return None


def batch_norm_update_running_stats_(running_mean: Tensor | None, running_var: Tensor | None, mean: Tensor,
                                     var: Tensor, count: int, momentum: float) -> None:
    """torch's running-statistics update, in place: running = momentum * batch + (1 - momentum) *
    running, with the batch's unbiased variance var * count / (count - 1)."""
    torch.ops.fusedopt.batch_norm_update_running_stats_(running_mean, running_var, mean, var, count, momentum)


def batch_norm_train(input: Tensor, weight: Tensor | None, bias: Tensor | None,
                     eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(out, mean, var): batch_norm_stats then batch_norm_elemt, in one call."""
    return torch.ops.fusedopt.batch_norm_train(input, weight, bias, eps)


def batch_norm_train_backward(grad_output: Tensor, input: Tensor, weight: Tensor | None, mean: Tensor,
                              var: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_input, sum_dy, sum_dy_xmu): batch_norm_backward_reduce then batch_norm_backward_elemt
    over all the input's values per channel, in one call."""
    return torch.ops.fusedopt.batch_norm_train_backward(grad_output, input, weight, mean, var, eps)


def batch_norm_stats(input: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel (mean, biased variance) of an (N, C, *) input."""
    return torch.ops.fusedopt.batch_norm_stats(input)


def batch_norm_elemt(input: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor, var: Tensor,
                     eps: float) -> Tensor:
    """(input - mean) / sqrt(var + eps) * weight + bias, per channel."""
    return torch.ops.fusedopt.batch_norm_elemt(input, weight, bias, mean, var, eps)


def batch_norm_backward_reduce(grad_output: Tensor, input: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel (sum(grad_output), sum(grad_output * (input - mean)))."""
    return torch.ops.fusedopt.batch_norm_backward_reduce(grad_output, input, mean)


def batch_norm_backward_elemt(grad_output: Tensor, input: Tensor, weight: Tensor | None, mean: Tensor,
                              var: Tensor, sum_dy: Tensor, sum_dy_xmu: Tensor, count: int,
                              eps: float) -> Tensor:
    """grad_input of training-mode batch norm over `count` values per channel."""
    return torch.ops.fusedopt.batch_norm_backward_elemt(grad_output, input, weight, mean, var, sum_dy,
                                                        sum_dy_xmu, count, eps)
