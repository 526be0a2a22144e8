"""RMSprop and Adagrad ops: fake implementations for torch.compile and typed wrappers. Schemas are in
csrc/schemas/rmsprop_adagrad.cpp."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.register_fake("fusedopt::rmsprop_")
def _rmsprop_fake(params, grads, square_avgs, momentum_buffers, grad_avgs, state_steps, *, lr, alpha, eps,
                  weight_decay, momentum, centered, maximize, lr_tensor=None, grad_scale=None,
                  found_inf=None, write_grads=True) -> None:
    return None


@torch.library.register_fake("fusedopt::adagrad_")
def _adagrad_fake(params, grads, state_sums, state_steps, *, lr, lr_decay, weight_decay, eps, maximize,
                  lr_tensor=None, grad_scale=None, found_inf=None, write_grads=True) -> None:
    return None


def rmsprop_(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    grad_avgs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    lr_tensor: Tensor | None = None,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    write_grads: bool = True,
) -> None:
    """One fused RMSprop step over lockstep lists (one device); adds 1 to each step count. See
    torch.optim.RMSprop for the math. momentum_buffers is empty unless momentum > 0, grad_avgs unless
    centered."""
    torch.ops.fusedopt.rmsprop_(
        params, grads, square_avgs, momentum_buffers, grad_avgs, state_steps, lr=lr, alpha=alpha, eps=eps,
        weight_decay=weight_decay, momentum=momentum, centered=centered, maximize=maximize,
        lr_tensor=lr_tensor, grad_scale=grad_scale, found_inf=found_inf,
        write_grads=write_grads)


def adagrad_(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    lr_tensor: Tensor | None = None,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    write_grads: bool = True,
) -> None:
    """One fused Adagrad step over lockstep lists (one device); adds 1 to each step count and uses it
    for that param's decayed lr. See torch.optim.Adagrad for the math."""
    torch.ops.fusedopt.adagrad_(
        params, grads, state_sums, state_steps, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
        eps=eps, maximize=maximize, lr_tensor=lr_tensor, grad_scale=grad_scale, found_inf=found_inf,
        write_grads=write_grads)
