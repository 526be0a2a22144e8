"""Adam/AdamW op: fake implementation for torch.compile and a typed wrapper. The schema is in
csrc/schemas/adam.cpp."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.register_fake("fusedopt::adam_")
def _adam_fake(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr, beta1,
               beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay, master_params,
               lr_tensor=None, grad_scale=None, found_inf=None, write_grads=True) -> None:
    return None


def adam_(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    master_params: list[Tensor] | None = None,
    lr_tensor: Tensor | None = None,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    write_grads: bool = True,
) -> None:
    """One fused Adam/AdamW step over lockstep lists (one device); increments each state_steps entry
    (1-element float32 tensors on the params' device) and uses it for bias correction. See
    torch.optim.Adam for the math and csrc/schemas/adam.cpp for master_params."""
    torch.ops.fusedopt.adam_(
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr, beta1=beta1,
        beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay, master_params=list(master_params or []),
        lr_tensor=lr_tensor, grad_scale=grad_scale, found_inf=found_inf,
        write_grads=write_grads)
