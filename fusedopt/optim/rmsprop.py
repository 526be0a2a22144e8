"""Fused RMSprop: ``fusedopt.optim.RMSprop`` is a drop-in for ``torch.optim.RMSprop``."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C
from . import _clipping, _common, _step_state
from ._fused_step import FusedStep

_NAME = "fusedopt.optim.RMSprop"


class RMSprop(FusedStep, torch.optim.RMSprop):
    """Implements RMSprop, as :class:`torch.optim.RMSprop`, with each param group's update done by one
    fused kernel per device (``torch.ops.fusedopt.rmsprop_``).

    Same constructor, defaults, validation errors, param groups and ``state_dict`` layout as
    ``torch.optim.RMSprop`` (it is a subclass), so checkpoints move between the two both ways; ``step``
    is kept as a float32 0-dim tensor on the param's device (as torch's fused optimizers keep it) and
    moved there when a checkpoint holds it elsewhere. ``foreach`` and ``capturable`` are accepted and
    recorded; the step is always fused and never synchronises with the host, except once on a param's
    first step under GradScaler. ``differentiable=True``, sparse gradients and complex parameters are
    not supported and raise before anything is modified. Works with ``torch.amp.GradScaler``: grads
    are unscaled inside the kernel and a step with non-finite grads changes nothing.

    ``max_grad_norm`` (keyword-only, default None: off) clips the gradients by their total
    ``grad_norm_type``-norm, as ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm,
    grad_norm_type)`` right before the update would, folded into the step's kernels (see
    ``fusedopt.optim._clipping``): the clipped grads are used, not stored, so ``p.grad`` keeps its
    values (with GradScaler the norm is that of the unscaled grads, and the grads are left unscaled
    and clipped). The norm is kept as a device tensor in ``last_grad_norm``; ``state_dict`` keeps
    torch's layout.
    """

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        max_grad_norm: float | None = None,
        grad_norm_type: float = 2.0,
    ) -> None:
        # The checks and messages of torch.optim.RMSprop.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        if differentiable:
            raise RuntimeError(f"{_NAME} does not support differentiable=True; use torch.optim.RMSprop")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        torch.optim.Optimizer.__init__(self, params, defaults)
        _clipping.init_folded_clipping(self, max_grad_norm, grad_norm_type)

    def _fix_loaded_state(self, state_dict) -> None:
        super()._fix_loaded_state(state_dict)
        _step_state.move_to_params(self)

    @staticmethod
    def _state_keys(group: dict) -> tuple[str, ...]:
        keys = ["step", "square_avg"]
        if group["momentum"] > 0:
            keys.append("momentum_buffer")
        if group["centered"]:
            keys.append("grad_avg")
        return tuple(keys)

    _NAME = _NAME

    def _required_state_keys(self, group: dict) -> tuple[str, ...]:
        return ("square_avg",)

    def _collect_keys(self, group: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self._state_keys(group), ("step",)

    def _skip_needs_sync(self, collected: list) -> bool:
        # A param's first step creates its state. If GradScaler is about to skip this step, the state
        # must not exist afterwards (torch's non-fused path skips step() entirely).
        return any(c.missing(k) for _, c, _ in collected for k in c.keys)

    def _prepare(self, group: dict, c) -> None:
        _step_state.create_missing(c, self.state)
        for key in c.keys[1:]:
            _common.create_missing_state(c, self.state, key, fill=0.0)

    def _run(self, group: dict, c, _prepared, grad_scale: Tensor | None, found_inf: Tensor | None,
             write_grads: bool) -> None:
        lr, lr_tensor = _common.lr_args(group["lr"], c.device)
        _C.rmsprop_group(
            c, lr=lr, lr_tensor=lr_tensor, alpha=float(group["alpha"]), eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]), momentum=float(group["momentum"]),
            centered=bool(group["centered"]), maximize=bool(group["maximize"]), grad_scale=grad_scale,
            found_inf=found_inf, write_grads=write_grads)
