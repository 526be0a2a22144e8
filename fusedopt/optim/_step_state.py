"""Per-param step counts (state 'step') of the fused optimizers that keep one: float32 0-dim tensors on
the param's device, as torch's fused optimizers keep them. torch's for-loop/foreach optimizers keep them
on the CPU, so checkpoints from those are moved on load and, failing that, before a step."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C


def check(collected, name: str, group_index: int) -> list[int]:
    """The indices of the collected params whose 'step' must be moved or retyped before the op runs.
    Raises (before anything is modified) for a 'step' that is not a single value."""
    fixes, bad, numel = _C.scalar_state_fixes(collected, "step")
    if bad >= 0:
        what = "a sparse tensor" if numel < 0 else f"a tensor of {numel} elements"
        raise ValueError(
            f"{name}: param group {group_index}: the state 'step' of a param is {what}; expected a "
            f"single step count (was the state_dict saved for a different optimizer?)")
    return fixes


def _as_count(value, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().to(device=device, dtype=torch.float32).reshape(()).clone()
    return torch.tensor(float(value), dtype=torch.float32, device=device)


def repair(collected, optimizer_state, fixes: list[int]) -> None:
    """Move the steps listed by check() to their param's device as float32 0-dim tensors."""
    if fixes:
        params, steps = collected.params, collected.state("step")
        for i in fixes:
            t = _as_count(steps[i], params[i].device)
            optimizer_state[params[i]]["step"] = t
            collected.set_state("step", i, t)


def create_missing(collected, optimizer_state) -> None:
    """A step count for every collected param without one: 0, or the value of a non-tensor 'step'
    (state set by hand or by an old checkpoint)."""
    missing = collected.missing("step")
    if missing:
        params = collected.params
        for i in missing:
            state = optimizer_state[params[i]]
            t = _as_count(state.get("step", 0.0), params[i].device)
            state["step"] = t
            collected.set_state("step", i, t)


def move_to_params(optimizer) -> None:
    """After load_state_dict: every tensor 'step' as a float32 0-dim tensor on its param's device."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            step = state.get("step") if state else None
            if (isinstance(step, Tensor) and step.numel() == 1 and step.layout == torch.strided
                    and (step.device != p.device or step.dtype != torch.float32 or step.dim() != 0)):
                state["step"] = _as_count(step, p.device)
