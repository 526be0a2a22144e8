"""Gradient clipping folded into an optimizer step (``max_grad_norm=`` on the fusedopt optimizers).

The optimizer kernels already divide each grad by GradScaler's ``grad_scale`` and write the result
back. Clipping multiplies the unscaled grads by ``clip_coef``; both fold into one divisor,
``grad_scale_eff = (grad_scale or 1) / clip_coef``, so unscale + clip + update happen in the kernel's
single pass over the grads, after one read of the grads for the norm. Nothing synchronises with the host.
"""

from __future__ import annotations

import torch
from torch import Tensor


def folded_clip_grad_scales(optimizer, collected: list, grad_scale: Tensor | None, max_norm: float,
                            norm_type: float) -> dict[torch.device, Tensor]:
    """Clip coefficients for one step, folded into per-device grad scales.

    Contract (every fusedopt optimizer with ``max_grad_norm`` calls this at the start of ``step()``,
    after collecting and checking all groups and before launching any kernel):

    - ``collected``: the step's ``(group, CollectedGroup)`` pairs (``_common.collect``), all groups and
      devices; only ``CollectedGroup.grads`` is read.
    - ``grad_scale``: GradScaler's ``optimizer.grad_scale`` (None without GradScaler, or when the grads
      were already unscaled).
    - The norm of the *unscaled* grads over everything collected is computed as
      ``fusedopt.nn.utils.get_total_norm`` does (one fused read per device; with ``grad_scale`` the
      norm of the scaled grads is divided by it, on the device) and kept, as a device tensor, in
      ``optimizer.last_grad_norm`` (for logging; reading it synchronises).
    - ``clip_coef = clamp(max_norm / (norm + 1e-6), max=1)`` exactly as
      ``torch.nn.utils.clip_grads_with_norm_``.
    - Returns ``{device: grad_scale_eff}`` for every device in ``collected``: a 1-element float32
      tensor on that device equal to ``(grad_scale or 1) / clip_coef``. The optimizer passes it as the
      kernel's ``grad_scale`` argument in place of GradScaler's (so the kernel runs its unscale path
      even without GradScaler) and, as for GradScaler, writes the grads the kernel rewrote back into
      any grads replaced by layout repairs (``_common.write_back_grads``). Afterwards the grads hold
      the unscaled, clipped values, as after ``scaler.unscale_(opt); clip_grad_norm_(...)``.
    - ``found_inf`` is not involved: a step GradScaler skips leaves the grads as they were (scaled),
      and the norm of such grads is inf/nan.
    - Returns {} (and sets ``last_grad_norm`` to ``tensor(0.)``) when no param has a grad.
    """
    from ..nn.utils.clip_grad import get_total_norm
    grads = [g for _, c in collected for g in c.grads]
    if not grads:
        optimizer.last_grad_norm = torch.tensor(0.0)
        return {}
    norm = get_total_norm(grads, norm_type)
    if grad_scale is not None:
        norm = norm / grad_scale.to(norm.device, non_blocking=True)
    optimizer.last_grad_norm = norm
    clip_coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    out: dict[torch.device, Tensor] = {}
    for g in grads:
        if g.device in out:
            continue
        coef = clip_coef.to(g.device, non_blocking=True)
        scale = (grad_scale.to(g.device, non_blocking=True) if grad_scale is not None
                 else torch.ones((), device=g.device))
        out[g.device] = (scale / coef).to(torch.float32).reshape(1)
    return out
