"""Optimizer ops: fake implementations for torch.compile and typed wrappers. Schemas are in
csrc/schemas/optimizers.cpp."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.register_fake("fusedopt::sgd_")
def _sgd_fake(params, grads, momentum_buffers, *, lr, weight_decay, momentum, dampening, nesterov,
              maximize, is_first_step, lr_tensor=None, grad_scale=None, found_inf=None,
              write_grads=True) -> None:
    return None


def sgd_(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    is_first_step: bool,
    lr_tensor: Tensor | None = None,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    write_grads: bool = True,
) -> None:
    """One fused SGD step over lockstep lists (one device). See torch.optim.SGD for the math."""
    torch.ops.fusedopt.sgd_(
        params, grads, momentum_buffers, lr=lr, weight_decay=weight_decay, momentum=momentum,
        dampening=dampening, nesterov=nesterov, maximize=maximize, is_first_step=is_first_step,
        lr_tensor=lr_tensor, grad_scale=grad_scale, found_inf=found_inf,
        write_grads=write_grads)
