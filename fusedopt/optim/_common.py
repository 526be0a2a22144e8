"""Machinery shared by the fusedopt optimizers: one checked pass over a param group before anything is
modified (in C++, see csrc/python/step_helpers.cpp), layout repairs, grouping by device, and the
arguments GradScaler and tensor learning rates turn into."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import torch
from torch import Tensor

from .. import _C


@dataclasses.dataclass
class GroupPlan:
    """The params of one param group that have grads, with their grads and state tensors, checked.

    ``states[key][i]`` is the state tensor ``key`` of ``params[i]``, or None where it does not exist yet
    (the param's first step)."""

    group: dict
    params: list[Tensor]
    grads: list[Tensor]
    states: dict[str, list[Tensor | None]]
    grad_fixes: list[int]
    state_fixes: list[tuple[int, int]]
    num_devices: int
    # grads[i] replaced by a copy in its param's layout: original grads, for writing back.
    replaced_grads: dict[int, Tensor] = dataclasses.field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    def repair_layouts(self, optimizer_state) -> None:
        """Grads and state tensors whose dtype, device or memory order differ from their param's
        (hand-assigned grads, state loaded from a checkpoint) are replaced by equal-valued tensors laid
        out like the param; repaired state tensors are stored back into the optimizer's state."""
        for i in self.grad_fixes:
            p, g = self.params[i], self.grads[i]
            self.replaced_grads[i] = g
            self.grads[i] = torch.empty_like(p).copy_(g)
        keys = list(self.states)
        for key_index, i in self.state_fixes:
            key, p = keys[key_index], self.params[i]
            fixed = torch.empty_like(p).copy_(self.states[key][i])
            optimizer_state[p][key] = self.states[key][i] = fixed

    def write_back_grads(self) -> None:
        """Copy grads the kernel rewrote (GradScaler unscaling) into the grads they replaced."""
        for i, original in self.replaced_grads.items():
            original.copy_(self.grads[i])

    def by_device(self) -> list["GroupPlan"]:
        if self.num_devices == 1:
            return [self]
        indices: dict[torch.device, list[int]] = defaultdict(list)
        for i, p in enumerate(self.params):
            indices[p.device].append(i)
        plans = []
        for idx in indices.values():
            pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
            plan = GroupPlan(self.group, pick(self.params), pick(self.grads),
                             {k: pick(v) for k, v in self.states.items()}, [], [], 1)
            plan.replaced_grads = {j: self.replaced_grads[i] for j, i in enumerate(idx)
                                   if i in self.replaced_grads}
            plans.append(plan)
        return plans


def collect(optimizer, name: str, group_index: int, keys: tuple[str, ...]) -> GroupPlan:
    """Check and gather one param group; raises (naming the group and param) before anything is
    modified when the fused kernels cannot take it."""
    group = optimizer.param_groups[group_index]
    params, grads, states, grad_fixes, state_fixes, num_devices = _C.collect_group(
        group["params"], optimizer.state, list(keys), f"{name}: param group {group_index}")
    return GroupPlan(group, params, grads, dict(zip(keys, states)), grad_fixes,
                     [tuple(f) for f in state_fixes], num_devices)


def missing(states: list[Tensor | None]) -> list[int]:
    return [i for i, s in enumerate(states) if s is None]


def grad_scaler_tensors(optimizer) -> tuple[Tensor | None, Tensor | None]:
    """(grad_scale, found_inf) that torch.amp.GradScaler sets on optimizers with
    _step_supports_amp_scaling for the duration of step()."""
    return getattr(optimizer, "grad_scale", None), getattr(optimizer, "found_inf", None)


def on_device(t: Tensor | None, device: torch.device, cache: dict) -> Tensor | None:
    """t moved (asynchronously) to device, once per device and step."""
    if t is None or t.device == device:
        return t
    key = (id(t), device)
    if key not in cache:
        cache[key] = t.to(device, non_blocking=True)
    return cache[key]


def lr_args(lr: float | Tensor, device: torch.device) -> tuple[float, Tensor | None]:
    """(lr, lr_tensor) for an op call on device. A tensor lr on another device than the params is read
    on the host when it lives on the CPU (no synchronisation), else moved to the params' device."""
    if not isinstance(lr, Tensor):
        return float(lr), None
    if lr.device == device or lr.device.type != "cpu":
        return 0.0, lr.detach().to(device=device, dtype=torch.float32).reshape(())
    return float(lr), None
