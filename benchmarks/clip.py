"""Gradient-clipping benchmarks.

clip:      clip_grad_norm_ over 16M params in 2,000 tensors (1M in 200 with --quick): fusedopt against
           torch's for-loop and foreach paths.
clip-step: clipping + an SGD-with-momentum step (the issue states its goal for AdamW; SGD is the
           optimizer this branch has): SGD(max_grad_norm=...) with the clipping folded into the step,
           against fusedopt's clip_grad_norm_ followed by fusedopt's SGD step (the folding's own gain),
           and against torch's clip_grad_norm_ (foreach) followed by torch's fused / foreach SGD.
"""

from __future__ import annotations

import torch

import fusedopt
from harness import OPTIONS, Case, Variant
from workloads import equal_split

_ELEMENT_SIZE = {torch.float32: 4, torch.float64: 8, torch.float16: 2, torch.bfloat16: 2}
_MAX_NORM = 1.0


def _param_set():
    return equal_split(1 << 20, 200) if OPTIONS.quick else equal_split(16 << 20, 2000)


def _params_with_grads(pset, device, dtype):
    params = [torch.nn.Parameter(p) for p in pset.make(device, dtype)]
    for p, g in zip(params, pset.make(device, dtype, seed=1)):
        p.grad = g
    return params


def _clip_fn(clip, **kwargs):
    def make(pset, device, dtype):
        def setup():
            params = _params_with_grads(pset, device, dtype)
            return lambda: clip(params, _MAX_NORM, **kwargs)
        return setup
    return make


def clip_cases(device: str, dtype: torch.dtype, _sets) -> list[Case]:
    pset = _param_set()
    variants = [
        Variant("torch for-loop", _clip_fn(torch.nn.utils.clip_grad_norm_, foreach=False)(pset, device, dtype), True),
        Variant("torch foreach", _clip_fn(torch.nn.utils.clip_grad_norm_, foreach=True)(pset, device, dtype), True),
        Variant("fusedopt", _clip_fn(fusedopt.nn.utils.clip_grad_norm_)(pset, device, dtype)),
    ]
    # read the grads for the norm, then read and write them to scale
    per_element = 3 * _ELEMENT_SIZE[dtype]
    return [Case("clip", f"clip_grad_norm_, {pset.name}", device, str(dtype).replace("torch.", ""),
                 pset.numel, pset.count, per_element * pset.numel, variants)]


def _clip_step_fn(make_optimizer, clip):
    def make(pset, device, dtype):
        def setup():
            params = _params_with_grads(pset, device, dtype)
            opt = make_optimizer(params)
            opt.step()  # creates the state outside the timed region

            def run():
                if clip is not None:
                    clip(params, _MAX_NORM)
                opt.step()
            return run
        return setup
    return make


def clip_step_cases(device: str, dtype: torch.dtype, _sets) -> list[Case]:
    pset = _param_set()
    kwargs = dict(lr=0.01, momentum=0.9, weight_decay=1e-4)
    torch_clip = lambda ps, m: torch.nn.utils.clip_grad_norm_(ps, m, foreach=True)  # noqa: E731
    variants = [
        Variant("torch clip + foreach SGD",
                _clip_step_fn(lambda ps: torch.optim.SGD(ps, foreach=True, **kwargs), torch_clip)(pset, device, dtype), True),
        Variant("torch clip + fused SGD",
                _clip_step_fn(lambda ps: torch.optim.SGD(ps, fused=True, **kwargs), torch_clip)(pset, device, dtype), True),
        Variant("fusedopt clip + SGD (separate)",
                _clip_step_fn(lambda ps: fusedopt.optim.SGD(ps, **kwargs), fusedopt.nn.utils.clip_grad_norm_)(pset, device, dtype)),
        Variant("fusedopt SGD(max_grad_norm) folded",
                _clip_step_fn(lambda ps: fusedopt.optim.SGD(ps, max_grad_norm=_MAX_NORM, **kwargs), None)(pset, device, dtype)),
    ]
    # folded minimum: read grads (norm); read param, grad, buffer; write param, grad, buffer
    per_element = 7 * _ELEMENT_SIZE[dtype]
    return [Case("clip-step", f"clip + SGD momentum, {pset.name}", device, str(dtype).replace("torch.", ""),
                 pset.numel, pset.count, per_element * pset.numel, variants)]


GROUPS = {"clip": clip_cases, "clip-step": clip_step_cases}
