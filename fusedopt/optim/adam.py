"""Fused Adam and AdamW: ``fusedopt.optim.Adam`` / ``fusedopt.optim.AdamW`` are drop-ins for
``torch.optim.Adam`` / ``torch.optim.AdamW``."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C
from . import _clipping, _common, _step_state
from ._fused_step import FusedStep

_HALF = (torch.float16, torch.bfloat16)
# State keys kept in float32 for float16/bfloat16 params under master_weights=True.
_FLOAT32_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master_param")


class Adam(FusedStep, torch.optim.Adam):
    """Implements Adam (and, with ``decoupled_weight_decay=True``, AdamW) as :class:`torch.optim.Adam`,
    with each param group's update done by one fused kernel per device (``torch.ops.fusedopt.adam_``).

    Same constructor, defaults, validation errors, param groups and ``state_dict`` layout as
    ``torch.optim.Adam`` (it is a subclass): ``step`` is a float32 0-dim tensor on the param's device
    (as torch's fused Adam keeps it), ``exp_avg``, ``exp_avg_sq`` and, with amsgrad,
    ``max_exp_avg_sq``. Checkpoints move between the two both ways (``step`` tensors saved on the CPU
    by torch's default path are moved to the param's device on load). ``foreach`` and ``fused`` are
    accepted for compatibility and recorded, but the step is always fused. ``capturable=True`` is
    accepted: step counts and a tensor ``lr`` already live on the params' device and the CUDA step
    does not synchronise with the host (``betas`` given as CUDA tensors are read on the host once per
    step), but CUDA-graph capture of ``step()`` is untested (no GPU was available when this was
    written; the op itself has a capture test that runs on a GPU). ``differentiable=True``, sparse gradients and complex
    parameters are not supported and raise before anything is modified. Works with
    ``torch.amp.GradScaler``: grads are unscaled inside the kernel and a step with non-finite grads
    changes nothing, step counts included.

    Beyond torch: ``master_weights=True`` keeps a float32 copy of every float16/bfloat16 param (state
    key ``master_param``) and float32 optimizer states for it; the kernel updates the master and
    writes its rounded value to the param in the same pass, so small updates are not lost to the
    param's precision. Other params are unaffected. A torch optimizer loading such a checkpoint
    ignores ``master_param`` and casts the states to the params' dtype.

    ``max_grad_norm`` (keyword-only, default None: off) clips the gradients by their total
    ``grad_norm_type``-norm, as ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm,
    grad_norm_type)`` right before the update would, folded into the step's kernels (see
    ``fusedopt.optim._clipping``): the clipped grads are used, not stored, so ``p.grad`` keeps its
    values (with GradScaler the norm is that of the unscaled grads, and the grads are left unscaled
    and clipped). The norm is kept as a device tensor in ``last_grad_norm``; ``state_dict`` keeps
    torch's layout.
    """

    _NAME = "fusedopt.optim.Adam"
    _KEPT_ATTRIBUTES = {**FusedStep._KEPT_ATTRIBUTES, "master_weights": False}

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        master_weights: bool = False,
        max_grad_norm: float | None = None,
        grad_norm_type: float = 2.0,
    ) -> None:
        # torch.optim.Adam's constructor: its checks, messages and param-group defaults.
        torch.optim.Adam.__init__(
            self, params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay)
        if differentiable:
            raise RuntimeError(f"{self._NAME} does not support differentiable=True; use torch.optim.{self._NAME.rsplit('.', 1)[1]}")
        # Kept off the param groups so that state_dict()['param_groups'] equals torch's.
        self.master_weights = bool(master_weights)
        _clipping.init_folded_clipping(self, max_grad_norm, grad_norm_type)

    def __setstate__(self, state):
        super().__setstate__(state)
        # Step counts live on the param's device as float32 0-dim tensors (torch's default path saves
        # them on the CPU, old checkpoints as numbers). Done once here, not on every step.
        for group in self.param_groups:
            for p in group["params"]:
                p_state = self.state.get(p)
                if not p_state or "step" not in p_state:
                    continue
                step = p_state["step"]
                if not (torch.is_tensor(step) and step.dtype == torch.float32 and step.dim() == 0
                        and step.device == p.device):
                    p_state["step"] = torch.as_tensor(step).detach().to(
                        device=p.device, dtype=torch.float32).reshape(()).clone()

    def _fix_loaded_state(self, state_dict) -> None:
        super()._fix_loaded_state(state_dict)
        if not getattr(self, "master_weights", False):
            return
        # Optimizer.load_state_dict casts every state tensor to its param's dtype; master copies and
        # their states stay float32 (when the checkpoint has them in float32).
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for param_id, p in zip(saved_ids, params):
            saved = state_dict["state"].get(param_id)
            if not saved or p.dtype not in _HALF:
                continue
            for key in _FLOAT32_KEYS:
                value = saved.get(key)
                if torch.is_tensor(value) and value.dtype == torch.float32:
                    self.state[p][key] = torch.empty_like(p, dtype=torch.float32).copy_(value)

    def _required_state_keys(self, group: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _collect_keys(self, group: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
        keys = ("exp_avg", "exp_avg_sq", "step")
        if group["amsgrad"]:
            keys += ("max_exp_avg_sq",)
        if self.master_weights:
            keys += ("master_param",)
        # A step GradScaler skips leaves zero moments and step 0, which the next step treats exactly
        # like absent state: no host synchronisation (_skip_needs_sync stays False).
        return keys, ("step",)

    def _state_dtype(self, p: Tensor) -> torch.dtype:
        return torch.float32 if self.master_weights and p.dtype in _HALF else p.dtype

    def _prepare(self, group, c) -> list[int] | None:
        """Creates missing state; returns the indices of float16/bfloat16 params under
        master_weights (None without master weights)."""
        _step_state.create_missing(c, self.state)
        keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")
        for key in keys:
            _common.create_missing_state(c, self.state, key, fill=0.0, dtype_of=self._state_dtype)
        if not self.master_weights:
            return None
        params = c.params
        half = [i for i, p in enumerate(params) if p.dtype in _HALF]
        fresh = sorted(set(c.missing("master_param")).intersection(half))
        masters = _common.new_states_like([params[i] for i in fresh], [torch.float32] * len(fresh), None)
        for i, master in zip(fresh, masters):
            master.copy_(params[i])
            self.state[params[i]]["master_param"] = master
            c.set_state("master_param", i, master)
        return half

    def _run(self, group: dict, c, half: list[int] | None, grad_scale: Tensor | None,
             found_inf: Tensor | None, write_grads: bool) -> None:
        lr, lr_tensor = _common.lr_args(group["lr"], c.device)
        beta1, beta2 = group["betas"]
        hyper = dict(
            lr=lr, lr_tensor=lr_tensor, beta1=float(beta1), beta2=float(beta2), eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]), amsgrad=group["amsgrad"],
            maximize=group["maximize"], decoupled_weight_decay=group["decoupled_weight_decay"],
            grad_scale=grad_scale, found_inf=found_inf, write_grads=write_grads)
        if half is None:
            _C.adam_group(c, master_weights=False, **hyper)
            return
        half = [i for i, p in enumerate(c.params) if p.dtype in _HALF]  # indices within this part
        if len(half) == len(c):
            _C.adam_group(c, master_weights=True, **hyper)
            return
        half_set = set(half)
        if half:
            _C.adam_group(c.select(half), master_weights=True, **hyper)
        _C.adam_group(c.select([i for i in range(len(c)) if i not in half_set]), master_weights=False,
                      **hyper)


class AdamW(Adam, torch.optim.AdamW):
    """Implements AdamW as :class:`torch.optim.AdamW` (Adam with decoupled weight decay, default
    ``weight_decay=1e-2``), fused; see :class:`fusedopt.optim.Adam` for what is shared, including
    ``master_weights``."""

    _NAME = "fusedopt.optim.AdamW"

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        master_weights: bool = False,
        max_grad_norm: float | None = None,
        grad_norm_type: float = 2.0,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=True, master_weights=master_weights, max_grad_norm=max_grad_norm,
            grad_norm_type=grad_norm_type)
