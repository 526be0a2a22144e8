"""Functional forms of fusedopt's layers, with torch.nn.functional's signatures."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

# ---- batch norm ------------------------------------------------------------------------------------


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """torch.nn.functional.batch_norm on fusedopt's fused kernels (one reduction pass and one
    elementwise pass forward, the same backward). Running statistics are updated in place when given
    and training."""
    from ._batch_norm_autograd import (BatchNormEval, BatchNormTrain, update_running_stats, values_per_channel,
                                       verify_batch_size)
    from .._ops.batch_norm import param_dtype

    if input.dim() < 2:
        raise ValueError(f"batch_norm: expected input with at least 2 dimensions (N, C, ...), got {input.dim()}-d")
    if training:
        verify_batch_size(input.size())
    if momentum is None:
        raise TypeError("batch_norm: momentum must be a float (modules resolve momentum=None themselves)")
    # Weights and statistics enter the kernels in the math dtype (float32, float64 for float64 input).
    pdtype = param_dtype(input)
    w = weight.to(pdtype) if weight is not None else None
    b = bias.to(pdtype) if bias is not None else None
    if training:
        out, mean, var = BatchNormTrain.apply(input, w, b, eps)
        if running_mean is not None or running_var is not None:
            update_running_stats(running_mean, running_var, mean, var, values_per_channel(input), momentum)
        return out
    if running_mean is None or running_var is None:
        raise RuntimeError("batch_norm: running_mean and running_var must be defined in evaluation mode "
                           "(training=False)")
    return BatchNormEval.apply(input, w, b, running_mean.detach().to(pdtype), running_var.detach().to(pdtype), eps)
