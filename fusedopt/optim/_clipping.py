"""Gradient clipping folded into an optimizer step (``max_grad_norm=`` on the fusedopt optimizers).

The optimizer kernels already divide each grad by GradScaler's ``grad_scale`` and write the result
back. Clipping multiplies the unscaled grads by ``clip_coef``; both reach the kernel in its
``grad_scale`` argument as two factors, ``[grad_scale or 1, clip_coef]`` (``grad / s * c``, torch's
order: ``scaler.unscale_`` then ``clip_grad_norm_``), so unscale + clip + update happen in the kernel's
single pass over the grads, after one read of the grads for the norm. Nothing synchronises with the host.
(One divisor ``s / c`` overflowed float32 for an inf- or 1-norm near float32's limit, csrc/include/
fusedopt/grad_scale.h.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _C
from .._device import to_device


def init_folded_clipping(optimizer, max_grad_norm: float | None, grad_norm_type: float) -> None:
    """Checks and stores the ``max_grad_norm``/``grad_norm_type`` constructor arguments. They are
    attributes of the optimizer, not of its param groups, so ``state_dict`` keeps torch's layout."""
    if max_grad_norm is not None:
        max_grad_norm = float(max_grad_norm)
        if not max_grad_norm >= 0.0:
            raise ValueError(f"Invalid max_grad_norm value: {max_grad_norm}; expected a number >= 0")
    grad_norm_type = float(grad_norm_type)
    if grad_norm_type != grad_norm_type:
        raise ValueError("Invalid grad_norm_type value: nan")
    optimizer.max_grad_norm = max_grad_norm
    optimizer.grad_norm_type = grad_norm_type
    optimizer.last_grad_norm = None


def step_grad_scales(optimizer, collected: list, grad_scale: Tensor | None) -> dict | None:
    """{device: grad scale for the kernels} when the optimizer clips (``max_grad_norm`` set), else
    None (the kernels then take GradScaler's ``grad_scale`` as it is)."""
    if getattr(optimizer, "max_grad_norm", None) is None:
        return None
    return folded_clip_grad_scales(optimizer, collected, grad_scale, optimizer.max_grad_norm,
                                   optimizer.grad_norm_type)


def folded_clip_grad_scales(optimizer, collected: list, grad_scale: Tensor | None, max_norm: float,
                            norm_type: float) -> dict[torch.device, Tensor]:
    """Clip coefficients for one step, folded into per-device grad scales.

    Contract (every fusedopt optimizer with ``max_grad_norm`` calls this at the start of ``step()``,
    after collecting and checking all groups and before launching any kernel):

    - ``collected``: the step's ``(group, CollectedGroup, ...)`` tuples (``_common.collect``), all groups and
      devices; only ``CollectedGroup.grads`` is read.
    - ``grad_scale``: GradScaler's ``optimizer.grad_scale`` (None without GradScaler, or when the grads
      were already unscaled).
    - The norm of the *unscaled* grads over everything collected is computed as
      ``fusedopt.nn.utils.get_total_norm`` does (one fused read per device; with ``grad_scale`` the
      norm of the scaled grads is divided by it, on the device) and kept, as a device tensor, in
      ``optimizer.last_grad_norm`` (for logging; reading it synchronises).
    - ``clip_coef = clamp(max_norm / (norm + 1e-6), max=1)`` exactly as
      ``torch.nn.utils.clip_grads_with_norm_``.
    - Returns ``{device: factors}`` for every device in ``collected``: a 2-element tensor on that
      device, ``[grad_scale or 1, clip_coef]``, float64 when the norm is (some grad is float64), else
      float32. The optimizer passes it as the kernel's ``grad_scale`` argument in place of GradScaler's
      (so the kernel runs its unscale path even without GradScaler), which divides by the first and
      multiplies by the second. Only with GradScaler does the kernel store the divided grads (and the
      optimizer copy them into grads replaced by layout repairs, ``_common.write_back_grads``): they
      then hold the unscaled, clipped values, as after ``scaler.unscale_(opt); clip_grad_norm_(...)``.
      Without GradScaler the grads keep their values: the clipping is not written anywhere.
    - ``found_inf`` is not involved: a step GradScaler skips leaves the grads as they were (scaled),
      and the norm of such grads is inf/nan.
    - Returns {} (and sets ``last_grad_norm`` to ``tensor(0.)``) when no param has a grad.
    """
    from ..nn.utils.clip_grad import get_total_norm
    # FSDP2: the kernels see local shards, but the norm is over the whole (DTensor) grads of every
    # rank; get_total_norm all-reduces it across their mesh.
    devices = list(dict.fromkeys(d for entry in collected for d in entry[1].devices))
    if any(entry[1].has_dtensor for entry in collected):  # flag set by collect_group, no Python loop
        sharded = [p.grad for entry in collected for p in entry[1].params]
        norm = get_total_norm(sharded, norm_type)
        norm = norm.to_local() if hasattr(norm, "to_local") else norm
        return _scales(optimizer, devices, norm, grad_scale, max_norm, norm_type)
    if not devices:
        optimizer.last_grad_norm = torch.tensor(0.0)
        return {}
    norm = None
    if len(devices) == 1 and norm_type != 0.0:  # one fused call on the grads collected, in C++
        norm = _C.collected_total_norm([entry[1] for entry in collected], norm_type)
    if norm is None:
        norm = get_total_norm([g for entry in collected for g in entry[1].grads], norm_type)
    return _scales(optimizer, devices, norm, grad_scale, max_norm, norm_type)


def _scales(optimizer, devices: list[torch.device], norm: Tensor, grad_scale: Tensor | None,
            max_norm: float, norm_type: float) -> dict[torch.device, Tensor]:
    # Every p-norm scales with the grads, except the 0-"norm" (torch's count of nonzero elements).
    if grad_scale is not None and norm_type != 0.0:
        norm = norm / to_device(grad_scale, norm.device)
    optimizer.last_grad_norm = norm
    clip_coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    # A float64 norm (some grad is float64) keeps float64 factors: torch scales float64 grads by a
    # float64 coefficient (the kernels take grad_scale in float32 or float64, fusedopt/grad_scale.h).
    factors_dtype = torch.float64 if norm.dtype == torch.float64 else torch.float32
    out: dict[torch.device, Tensor] = {}
    for device in devices:
        coef = to_device(clip_coef, device).to(factors_dtype).reshape(1)
        scale = (to_device(grad_scale, device).to(factors_dtype).reshape(1) if grad_scale is not None
                 else torch.ones(1, dtype=factors_dtype, device=device))
        out[device] = torch.cat([scale, coef])
    return out
