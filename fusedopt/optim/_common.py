"""Machinery shared by the fusedopt optimizers: one checked pass over a param group before anything is
modified, kept in C++ (``_C.CollectedGroup``, see csrc/python/step_helpers.cpp); layout repairs; and
the arguments GradScaler and tensor learning rates turn into."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C
from .._device import to_device


def collect(optimizer, name: str, group_index: int, keys: tuple[str, ...],
            scalar_keys: tuple[str, ...] = ()) -> "_C.CollectedGroup":
    """Check and gather one param group: the params that have grads, their grads, their state tensors
    under `keys` (those also in `scalar_keys`, such as 'step', are per-param scalars). Raises (naming
    the group and param) before anything is modified when the fused kernels cannot take it."""
    where = f"{name}: param group {group_index}"
    collected = _C.collect_group(optimizer.param_groups[group_index]["params"], optimizer.state,
                                 list(keys), where, list(scalar_keys), _state_lookups(optimizer, group_index))
    if collected.bad_state is not None:
        index, key, state_shape, param_shape = collected.bad_state
        raise ValueError(
            f"{where}, param {index}: state '{key}' has shape {tuple(state_shape)} but the parameter "
            f"has shape {tuple(param_shape)}; was the state_dict saved for a different model?")
    return collected


def _state_lookups(optimizer, group_index: int) -> "_C.StateLookups":
    """The group's lookups kept between steps (``_C.StateLookups``: they hold no references and prove
    themselves current on each use). Kept in the optimizer's ``__dict__``, outside what
    ``torch.optim.Optimizer.__getstate__`` returns, so pickling, deepcopy and state_dict never see it."""
    kept = optimizer.__dict__.setdefault("_fusedopt_state_lookups", {})
    lookups = kept.get(group_index)
    if lookups is None:
        lookups = kept[group_index] = _C.StateLookups()
    return lookups


def _same_layout(t: Tensor, p: Tensor, dtype: torch.dtype) -> bool:
    # Same shape (checked by collect_group) and strides as the dense param: dense, same memory order.
    return (t.dtype == dtype and t.device == p.device
            and (t.stride() == p.stride() or (t.is_contiguous() and p.is_contiguous())))


def repair_layouts(collected, optimizer_state, state_dtype=None) -> dict[int, Tensor]:
    """Replace grads and state tensors whose dtype, device or memory order differ from their param's
    (hand-assigned grads, state loaded from a checkpoint) by equal-valued tensors laid out like the
    param; repaired state is stored back into the optimizer's state. Returns {index: original grad}
    for the grads replaced, to write unscaled values back after a GradScaler step.

    ``state_dtype(param)``, when given, is the dtype the optimizer keeps that param's state in (e.g.
    float32 for float16 params with master weights; collect_group flags such states as mismatches,
    so only what differs from that dtype is repaired).

    For a DTensor param the grad is repaired as its local shard (what the kernel sees), and the state
    as a DTensor placed like the param (what the optimizer state holds)."""
    replaced = {}
    if collected.grad_fixes:
        grads = collected.grads
        for i in collected.grad_fixes:
            replaced[i] = grads[i]
            collected.set_grad(i, torch.empty_like(collected.local_param(i)).copy_(grads[i]))
    if collected.state_fixes:
        params = collected.params
        for key_index, i in collected.state_fixes:
            key = collected.keys[key_index]
            p = params[i]
            t = optimizer_state[p][key]
            dtype = p.dtype if state_dtype is None else state_dtype(p)
            if dtype != p.dtype and _same_layout(t, p, dtype):
                continue
            fixed = torch.empty_like(p, dtype=dtype).copy_(t)
            optimizer_state[p][key] = fixed
            collected.set_state(key, i, fixed)
    return replaced


def is_partial_grad_of_replicated(param, grad) -> bool:
    """Whether DTensor grad is placed like DTensor param except for Partial where the param is
    Replicate: the grads of replicated params fed sharded activations (SequenceParallel's norm
    layers). Asked by collect_group (csrc/python/local_shards.cpp) only when the placements differ,
    and of loaded state by reduce_partial_state."""
    from torch.distributed.tensor import Partial, Replicate
    if grad.device_mesh != param.device_mesh or len(grad.placements) != len(param.placements):
        return False
    differs = False
    for g, p in zip(grad.placements, param.placements):
        if g == p:
            continue
        if not (isinstance(g, Partial) and isinstance(p, Replicate)):
            return False
        differs = True
    return differs


def reduce_partial_state(optimizer) -> None:
    """Reduces loaded state that is Partial where its DTensor param is Replicate to the param's
    placements (called by load_state_dict). torch 2.14's SGD keeps a first momentum buffer as
    ``clone(grad)``, so under sequence parallelism its checkpoint holds Partial buffers; the fused
    kernels need state placed like the param (collect_group raises otherwise). Walks the groups in
    order, so every rank, loading the same structure, makes the same collectives in the same order."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state or not hasattr(p, "device_mesh"):
                continue
            for key, value in list(state.items()):
                if (torch.is_tensor(value) and hasattr(value, "device_mesh")
                        and is_partial_grad_of_replicated(p, value)):
                    state[key] = value.redistribute(p.device_mesh, p.placements)


def reduce_partial_grads(collected: list) -> None:
    """Reduces the Partial grads of Replicate params (``CollectedGroup.partial_grads``) to the param's
    placements, as torch's optimizers do in their first op on such a grad, and makes the result the
    param's grad and the kernels' input. Called once every group is collected and checked, so each
    rank makes the same collectives in the same order (a rank that raised would have raised first).
    Unlike torch's, the grad is Replicate after the step (same values): a Partial grad has no single
    local value to write GradScaler's unscaled grads back to."""
    for entry in collected:
        c = entry[1]
        indices = c.partial_grads
        if not indices:
            continue
        params = c.params
        for i in indices:
            p = params[i]
            grad = p.grad
            reduced = grad.redistribute(grad.device_mesh, p.placements)
            local = reduced._local_tensor
            if local.stride() != grad._local_tensor.stride():  # keep the layout collect_group checked
                local = torch.empty_like(grad._local_tensor).copy_(local)
                reduced = type(reduced).from_local(local, reduced.device_mesh, reduced.placements,
                                                   run_check=False, shape=reduced.shape,
                                                   stride=reduced.stride())
            p.grad = reduced
            c.set_grad(i, local)


def write_back_grads(collected, replaced: dict[int, Tensor]) -> None:
    """Copy grads the kernel rewrote (GradScaler unscaling) into the grads they replaced."""
    if replaced:
        grads = collected.grads
        for i, original in replaced.items():
            original.copy_(grads[i])


# Exactly these types: torch.full_like keeps a subclass (and its placement, for a DTensor).
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def new_states_like(params: list[Tensor], dtypes: list[torch.dtype], fill: float | None) -> list[Tensor]:
    """For each param, a new state tensor like torch.full_like(p, fill, dtype=dtype,
    memory_format=torch.preserve_format) (torch.empty_like for fill None). Plain CPU params (Tensor,
    Parameter) with dense memory get theirs from one allocation on huge pages, each with a storage of
    its own of exactly its size (csrc/python/state_allocation.cpp: the update streams all of it every
    step); other params (a DTensor, which then gets a DTensor; other devices) get torch's."""
    out: list[Tensor | None] = [None] * len(params)
    plain = [i for i, p in enumerate(params) if type(p) in _PLAIN_TYPES and p.device.type == "cpu"]
    if plain:  # None back for a param that is not dense
        made = _C.new_cpu_states_like([params[i] for i in plain], [dtypes[i] for i in plain], fill)
        for i, t in zip(plain, made):
            out[i] = t
    for i, p in enumerate(params):
        if out[i] is None:
            out[i] = (torch.empty_like(p, dtype=dtypes[i], memory_format=torch.preserve_format) if fill is None
                      else torch.full_like(p, fill, dtype=dtypes[i], memory_format=torch.preserve_format))
    return out


def check_required_state(collected, keys: tuple[str, ...], name: str, group_index: int) -> None:
    """Raises when a param has a step count but lacks one of `keys` (see
    FusedStep._required_state_keys); torch fails on such state too (KeyError)."""
    for key in keys:
        missing = collected.missing(key)
        if missing:
            stepped = set(missing).difference(collected.missing("step"))
            if stepped:
                raise RuntimeError(f"{name}: param {min(stepped)} of param group {group_index} has a step count but "
                                   f"no state '{key}'; its state is incomplete (a checkpoint of another optimizer "
                                   "or a corrupt one?)")


def create_missing_state(collected, optimizer_state, key: str, fill: float | None = 0.0,
                         dtype_of=None) -> list[int]:
    """State `key` for every param that has none yet: new_states_like(param, fill) in dtype_of(param)
    (the param's dtype by default), stored in the optimizer state (for a DTensor param that is a DTensor
    placed like it; the kernel gets its local shard). Returns the indices that got new state."""
    fresh = collected.missing(key)
    if fresh:
        params = collected.params
        fresh_params = [params[i] for i in fresh]
        dtypes = [p.dtype if dtype_of is None else dtype_of(p) for p in fresh_params]
        for i, p, t in zip(fresh, fresh_params, new_states_like(fresh_params, dtypes, fill)):
            optimizer_state[p][key] = t
            collected.set_state(key, i, t)
    return fresh


def grad_scaler_tensors(optimizer) -> tuple[Tensor | None, Tensor | None]:
    """(grad_scale, found_inf) that torch.amp.GradScaler sets on optimizers with
    _step_supports_amp_scaling for the duration of step()."""
    return getattr(optimizer, "grad_scale", None), getattr(optimizer, "found_inf", None)


def on_device(t: Tensor | None, device: torch.device, cache: dict) -> Tensor | None:
    """t moved to device (to_device: asynchronously unless to the CPU), once per device and step."""
    if t is None or t.device == device:
        return t
    key = (id(t), device)
    if key not in cache:
        cache[key] = to_device(t, device)
    return cache[key]


def check_fused_and_foreach(fused: bool | None, foreach: bool | None) -> None:
    """torch's check of its fused optimizers (SGD, Adagrad), made after the param checks as there."""
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def lr_args(lr: float | Tensor, device: torch.device) -> tuple[float, Tensor | None]:
    """(lr, lr_tensor) for an op call on device. A tensor lr is read on the host, in full (float64)
    precision as torch's default path reads it, when it lives on the CPU (no synchronisation) or the
    params do; one on a GPU for GPU params stays there (capturable steps), passed to the kernels as
    float32 on the params' device."""
    if not isinstance(lr, Tensor):
        return float(lr), None
    if lr.device.type == "cpu" or device.type == "cpu":
        return float(lr), None
    return 0.0, lr.detach().to(device=device, dtype=torch.float32).reshape(())
