"""Fused Adagrad: ``fusedopt.optim.Adagrad`` is a drop-in for ``torch.optim.Adagrad``."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C
from . import _clipping, _common, _step_state
from ._fused_step import FusedStep

_NAME = "fusedopt.optim.Adagrad"


class Adagrad(FusedStep, torch.optim.Adagrad):
    """Implements Adagrad, as :class:`torch.optim.Adagrad`, with each param group's update done by one
    fused kernel per device (``torch.ops.fusedopt.adagrad_``).

    Same constructor, defaults, validation errors, param groups and ``state_dict`` layout as
    ``torch.optim.Adagrad`` (it is a subclass); like torch, the state (``step``, and ``sum`` filled with
    ``initial_accumulator_value``) is created by the constructor. ``step`` is kept as a float32 0-dim
    tensor on the param's device (as torch's fused Adagrad keeps it) and moved there when a checkpoint
    holds it elsewhere. ``foreach`` and ``fused`` are accepted and recorded; the step is always fused
    and never synchronises with the host. ``differentiable=True``, sparse gradients (which torch's
    for-loop Adagrad takes) and complex parameters are not supported and raise before anything is
    modified. Works with ``torch.amp.GradScaler``: grads are unscaled inside the kernel and a step with
    non-finite grads changes nothing, step counts included.

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
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        grad_norm_type: float = 2.0,
    ) -> None:
        # The checks and messages of torch.optim.Adagrad.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if differentiable:
            raise RuntimeError(f"{_NAME} does not support differentiable=True; use torch.optim.Adagrad")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        torch.optim.Optimizer.__init__(self, params, defaults)
        _common.check_fused_and_foreach(fused, foreach)
        _clipping.init_folded_clipping(self, max_grad_norm, grad_norm_type)
        for group in self.param_groups:
            params = group["params"]
            for p in params:
                self.state[p]["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            # torch fills every group's sums with the constructor's value, whatever the group says.
            for p, t in zip(params, self._initial_sums(params, initial_accumulator_value)):
                self.state[p]["sum"] = t

    @staticmethod
    def _initial_sums(params: list[Tensor], value: float) -> list[Tensor]:
        # A complex param's sum holds value + value*1j, as torch's does; the step then rejects it.
        sums = [torch.full_like(p, complex(value, value), memory_format=torch.preserve_format)
                if torch.is_complex(p) else None for p in params]
        real = [i for i, s in enumerate(sums) if s is None]
        made = _common.new_states_like([params[i] for i in real], [params[i].dtype for i in real], float(value))
        for i, t in zip(real, made):
            sums[i] = t
        return sums

    def _fix_loaded_state(self, state_dict) -> None:
        super()._fix_loaded_state(state_dict)
        _step_state.move_to_params(self)

    _NAME = _NAME

    def _required_state_keys(self, group: dict) -> tuple[str, ...]:
        return ("sum",)

    def _collect_keys(self, group: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return ("step", "sum"), ("step",)

    def _prepare(self, group: dict, c) -> None:
        # Params added by add_param_group have no state yet (torch's Adagrad fails on them).
        _step_state.create_missing(c, self.state)
        _common.create_missing_state(c, self.state, "sum", fill=float(group["initial_accumulator_value"]))

    def _run(self, group: dict, c, _prepared, grad_scale: Tensor | None, found_inf: Tensor | None,
             write_grads: bool) -> None:
        lr, lr_tensor = _common.lr_args(group["lr"], c.device)
        _C.adagrad_group(
            c, lr=lr, lr_tensor=lr_tensor, lr_decay=float(group["lr_decay"]),
            weight_decay=float(group["weight_decay"]), eps=float(group["eps"]),
            maximize=bool(group["maximize"]), grad_scale=grad_scale, found_inf=found_inf,
            write_grads=write_grads)
