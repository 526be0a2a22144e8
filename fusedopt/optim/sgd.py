"""Fused SGD: ``fusedopt.optim.SGD`` is a drop-in for ``torch.optim.SGD``."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C
from . import _clipping, _common
from ._fused_step import FusedStep

_NAME = "fusedopt.optim.SGD"


class SGD(FusedStep, torch.optim.SGD):
    """Implements stochastic gradient descent (optionally with momentum), as :class:`torch.optim.SGD`,
    with each param group's update done by one fused kernel per device (``torch.ops.fusedopt.sgd_``).

    Same constructor, defaults, validation errors, param groups and ``state_dict`` layout as
    ``torch.optim.SGD`` (it is a subclass), so checkpoints move between the two both ways. ``foreach``
    and ``fused`` are accepted for compatibility and recorded, but the step is always fused.
    ``differentiable=True``, sparse gradients and complex parameters are not supported and raise
    before anything is modified. Works with ``torch.amp.GradScaler``: grads are unscaled inside the
    kernel and a step with non-finite grads changes nothing.

    ``max_grad_norm`` (keyword-only, default None: off) clips the gradients by their total
    ``grad_norm_type``-norm as ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm, grad_norm_type)``
    right before the update, folded into the step's kernels (see ``fusedopt.optim._clipping``): the
    clipped grads are used, not stored, so ``p.grad`` keeps its values (with GradScaler the norm is
    that of the unscaled grads, and the grads are left unscaled and clipped).
    The norm before clipping is kept as a device tensor in ``last_grad_norm``. These two options are
    attributes of the optimizer, not of its param groups, so ``state_dict`` keeps torch's layout.
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        grad_norm_type: float = 2.0,
    ) -> None:
        # The checks and messages of torch.optim.SGD.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if differentiable:
            raise RuntimeError(f"{_NAME} does not support differentiable=True; use torch.optim.SGD")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        torch.optim.Optimizer.__init__(self, params, defaults)
        _common.check_fused_and_foreach(fused, foreach)
        _clipping.init_folded_clipping(self, max_grad_norm, grad_norm_type)

    _NAME = _NAME

    def _collect_keys(self, group: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (("momentum_buffer",) if group["momentum"] != 0 else ()), ()

    def _skip_needs_sync(self, collected: list) -> bool:
        # A param's first momentum step creates its buffer from the gradient. If GradScaler is about
        # to skip this step, the buffer must not exist afterwards (torch's non-fused path skips
        # step() entirely; torch's fused path would leave the empty buffer uninitialised).
        return any(c.keys and c.missing("momentum_buffer") for _, c, _ in collected)

    def _run(self, group: dict, c, _prepared, grad_scale: Tensor | None, found_inf: Tensor | None,
             write_grads: bool) -> None:
        lr, lr_tensor = _common.lr_args(group["lr"], c.device)
        hyper = dict(
            lr=lr, lr_tensor=lr_tensor, weight_decay=float(group["weight_decay"]),
            momentum=group["momentum"], dampening=group["dampening"], nesterov=group["nesterov"],
            maximize=group["maximize"], grad_scale=grad_scale, found_inf=found_inf, write_grads=write_grads,
        )
        if group["momentum"] == 0:
            _C.sgd_group(c, is_first_step=False, **hyper)
            return
        # Its values do not matter (fill=None): a first step stores the grad into it.
        fresh = _common.create_missing_state(c, self.state, "momentum_buffer", fill=None)
        if len(fresh) in (0, len(c)):
            _C.sgd_group(c, is_first_step=bool(fresh), **hyper)
            return
        # Some params start their momentum now (their grad was None until now), others continue.
        fresh_set = set(fresh)
        _C.sgd_group(c.select(fresh), is_first_step=True, **hyper)
        _C.sgd_group(c.select([i for i in range(len(c)) if i not in fresh_set]), is_first_step=False, **hyper)
