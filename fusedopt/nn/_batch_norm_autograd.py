"""Autograd of fusedopt's batch norm across ranks (SyncBatchNorm), and helpers of the local one, whose
autograd is in C++ (csrc/common/batch_norm_autograd.cpp)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._ops import batch_norm as ops


def values_per_channel(input: Tensor) -> int:
    return input.numel() // input.shape[1] if input.shape[1] else 0


def verify_batch_size(size: torch.Size) -> None:
    """torch's check that training statistics have more than one value per channel."""
    size_prods = size[0]
    for i in range(len(size) - 2):
        size_prods *= size[i + 2]
    if size_prods == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")


def check_eps(eps: float, training: bool) -> None:
    """torch's checks of eps (F.batch_norm's)."""
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")


def update_running_stats(running_mean: Tensor | None, running_var: Tensor | None, mean: Tensor, var: Tensor,
                         count: int | Tensor, momentum: float) -> None:
    """torch's running-statistics rule (op batch_norm_update_running_stats_): an exponential average of
    the batch mean and the unbiased batch variance (var * count / (count - 1)). `count` may be a 0-dim
    tensor on var's device (SyncBatchNorm's global count, never read on the host): the unbiased
    variance is then formed on the device and passed with count 1, which the op takes as it is.
    Never recorded by autograd (the op's Autograd kernel steps past it, and SyncBatchNorm calls this
    from its forward, where grad mode is off), so no torch.no_grad() costs its ~1.5 us per layer."""
    if isinstance(count, Tensor):
        var = (var * torch.where(count > 1, count / (count - 1).clamp(min=1), torch.ones_like(count))).to(var.dtype)
        count = 1
    ops.batch_norm_update_running_stats_(running_mean, running_var, mean, var, count, momentum)


def _grads_of_params(ctx, sum_dy: Tensor, sum_dy_xmu: Tensor, var: Tensor, eps: float):
    grad_weight = sum_dy_xmu * torch.rsqrt(var + eps) if ctx.needs_input_grad[1] else None
    grad_bias = sum_dy if ctx.needs_input_grad[2] else None
    return grad_weight, grad_bias


def merge_rank_stats(means: Tensor, vars: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Combines per-rank (mean, biased var, count) rows into the statistics of all values, exactly as
    if one process had seen the whole batch: Chan's merge in closed form, in float64, with no sum of
    squares (no cancellation). Ranks with no values count for nothing. The total count is returned as
    a 0-dim float64 tensor on the rows' device (reading it would synchronise with the device)."""
    counts = counts.to(torch.float64).reshape(-1, 1)
    present = counts > 0
    means = torch.where(present, means.to(torch.float64), 0.0)
    vars = torch.where(present, vars.to(torch.float64), 0.0)
    total = counts.sum()
    mean = (counts * means).sum(0) / total
    m2 = (counts * vars).sum(0) + (counts * (means - mean) ** 2).sum(0)
    return mean, m2 / total, total


class SyncBatchNormTrain(torch.autograd.Function):
    """Training mode across the ranks of a process group: local statistics, all-gathered and merged
    with their counts (uneven batches are exact); backward all-reduces the two per-channel sums."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, process_group, world_size):
        import torch.distributed as dist

        C = input.shape[1]
        local_count = values_per_channel(input)
        if local_count > 0:
            mean, var = ops.batch_norm_stats(input)
        else:
            mean = var = input.new_zeros((C,), dtype=ops.param_dtype(input))
        row = torch.cat([mean.double(), var.double(), mean.new_full((1,), local_count, dtype=torch.float64)])
        rows = [torch.empty_like(row) for _ in range(world_size)]
        dist.all_gather(rows, row, group=process_group)
        table = torch.stack(rows)
        g_mean, g_var, count = merge_rank_stats(table[:, :C], table[:, C:2 * C], table[:, 2 * C])
        # The global count stays on the device (no host synchronisation per layer and step). It can be
        # 1 only if every rank holds at most one value per channel, so only such ranks read it: all of
        # them then raise together.
        if local_count <= 1 and int(count.item()) == 1:
            raise ValueError("Expected more than 1 value per channel when training, got a global batch of "
                             "1 value per channel")
        pdtype = ops.param_dtype(input)
        g_mean, g_var = g_mean.to(pdtype), g_var.to(pdtype)
        update_running_stats(running_mean, running_var, g_mean, g_var, count, momentum)
        out = ops.batch_norm_elemt(input, weight, bias, g_mean, g_var, eps)
        ctx.save_for_backward(input, weight, g_mean, g_var)
        ctx.eps, ctx.count, ctx.process_group = eps, count, process_group
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        import torch.distributed as dist

        input, weight, mean, var = ctx.saved_tensors
        C = input.shape[1]
        sum_dy, sum_dy_xmu = ops.batch_norm_backward_reduce(grad_out, input, mean)
        # weight/bias grads stay local, as torch's SyncBatchNorm: DDP reduces parameter grads itself.
        grad_weight, grad_bias = _grads_of_params(ctx, sum_dy, sum_dy_xmu, var, ctx.eps)
        grad_input = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([sum_dy, sum_dy_xmu])
            dist.all_reduce(sums, group=ctx.process_group)
            # Divided by the global count on the device; the op then takes count 1 (no host read).
            sums = sums / ctx.count.to(sums.dtype)
            grad_input = ops.batch_norm_backward_elemt(grad_out, input, weight, mean, var, sums[:C], sums[C:],
                                                       1, ctx.eps)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None
