"""Gradient-clipping benchmarks.

clip:      clip_grad_norm_ over 16M params in 2,000 tensors (1M in 200 with --quick): fusedopt against
           torch's for-loop and foreach paths, in two regimes. *Clipping*: the norm exceeds max_norm
           on every call (max_norm shrinks by 1% per call, so each call scales the grads by ~0.99).
           *Not clipping*: the norm is within max_norm (coefficient 1), where torch still rewrites every
           gradient and fusedopt only reads them.
           torch.compile'd clip_grad_norm_ (foreach) is a torch variant of both (max_norm passed as an
           argument of the compiled function).
clip-step: clipping + an optimizer step (SGD with momentum; AdamW, which the issue states its goal
           for), clipping on every call: <Optimizer>(max_grad_norm=...) with the clipping folded into
           the step, against fusedopt's clip_grad_norm_ followed by fusedopt's step (the folding's own
           gain), and against torch's clip_grad_norm_ (foreach) followed by torch's fused step.
"""

from __future__ import annotations

import torch

import fusedopt
from harness import OPTIONS, Case, Variant, check_compile_size, warmed
from workloads import equal_split

_ELEMENT_SIZE = {torch.float32: 4, torch.float64: 8, torch.float16: 2, torch.bfloat16: 2}
_SHRINK = 0.99  # per-call factor of max_norm while clipping: every call clips, grads stay normal


def _param_set():
    return equal_split(1 << 20, 200) if OPTIONS.quick else equal_split(16 << 20, 2000)


def _params_with_grads(pset, device, dtype):
    params = [torch.nn.Parameter(p) for p in pset.make(device, dtype)]
    for p, g in zip(params, pset.make(device, dtype, seed=1)):
        p.grad = g
    return params


def _grad_norm(params) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params])))


class _ShrinkingMaxNorm:
    """max_norm for successive calls: _SHRINK times the grads' norm before the first call, then _SHRINK
    times the previous max_norm, so each call clips by about _SHRINK (the grads keep their scale)."""

    def __init__(self, params):
        self.value = _grad_norm(params)

    def next(self) -> float:
        self.value *= _SHRINK
        return self.value


def _clip_fn(clip, clipping: bool, **kwargs):
    def make(pset, device, dtype):
        def setup():
            params = _params_with_grads(pset, device, dtype)
            if not clipping:
                max_norm = 2.0 * _grad_norm(params)
                return lambda: clip(params, max_norm, **kwargs)
            schedule = _ShrinkingMaxNorm(params)
            return lambda: clip(params, schedule.next(), **kwargs)
        return setup
    return make


def _compiled_clip_fn(clipping: bool):
    def make(pset, device, dtype):
        def setup():
            check_compile_size(pset.count)
            compiled = torch.compile(torch.nn.utils.clip_grad_norm_)
            # max_norm changes every call while clipping: passed as a 0-dim tensor (a graph input), a
            # Python float would be specialised on and recompile on every call.
            def clip(ps, max_norm, **kwargs):
                return compiled(ps, torch.tensor(max_norm, device=device), **kwargs)
            return warmed(_clip_fn(clip, clipping, foreach=True)(pset, device, dtype)())
        return setup
    return make


def clip_cases(device: str, dtype: torch.dtype, _sets) -> list[Case]:
    pset = _param_set()
    size = _ELEMENT_SIZE[dtype]
    cases = []
    for clipping in (True, False):
        variants = [
            Variant("torch for-loop", _clip_fn(torch.nn.utils.clip_grad_norm_, clipping, foreach=False)(pset, device, dtype), True),
            Variant("torch foreach", _clip_fn(torch.nn.utils.clip_grad_norm_, clipping, foreach=True)(pset, device, dtype), True),
        ]
        if OPTIONS.compile:
            variants.append(Variant("torch compiled (foreach)", _compiled_clip_fn(clipping)(pset, device, dtype),
                                    is_torch=True, compiled=True))
        variants.append(Variant("fusedopt", _clip_fn(fusedopt.nn.utils.clip_grad_norm_, clipping)(pset, device, dtype)))
        # clipping: read the grads for the norm, then read and write them to scale; else one read
        per_element = (3 if clipping else 1) * size
        regime = "clipping" if clipping else "not clipping (norm < max_norm)"
        cases.append(Case("clip", f"clip_grad_norm_, {regime}, {pset.name}", device,
                          str(dtype).replace("torch.", ""), pset.numel, pset.count,
                          per_element * pset.numel, variants))
    return cases


def _clip_step_fn(make_optimizer, clip):
    """clip is None: the optimizer folds the clipping (made with max_grad_norm, see _folded)."""
    def make(pset, device, dtype):
        def setup():
            params = _params_with_grads(pset, device, dtype)
            opt = make_optimizer(params)
            opt.step()  # creates the state outside the timed region
            if clip is None:
                return opt.step
            schedule = _ShrinkingMaxNorm(params)

            def run():
                clip(params, schedule.next())
                opt.step()
            return run
        return setup
    return make


def _folded(cls, **kwargs):
    # The folded step never changes the grads, so a fixed max_norm below their norm clips every call.
    def make(params):
        return cls(params, max_grad_norm=_SHRINK * _grad_norm(params), **kwargs)
    return make


def clip_step_cases(device: str, dtype: torch.dtype, _sets) -> list[Case]:
    pset = _param_set()
    size = _ELEMENT_SIZE[dtype]
    torch_clip = lambda ps, m: torch.nn.utils.clip_grad_norm_(ps, m, foreach=True)  # noqa: E731
    ours_clip = fusedopt.nn.utils.clip_grad_norm_
    # (label, torch class, fusedopt class, kwargs, arrays read+written by the folded step besides the
    # norm's read of the grads: SGD reads param, grad, buffer and writes param, buffer; AdamW reads
    # param, grad, exp_avg, exp_avg_sq and writes param, exp_avg, exp_avg_sq)
    optimizers = [
        ("SGD momentum", torch.optim.SGD, fusedopt.optim.SGD, dict(lr=0.01, momentum=0.9, weight_decay=1e-4), 5),
        ("AdamW", torch.optim.AdamW, fusedopt.optim.AdamW, dict(lr=1e-3, weight_decay=1e-2), 7),
    ]
    cases = []
    for label, torch_cls, ours_cls, kwargs, arrays in optimizers:
        variants = [
            Variant(f"torch clip + fused {label}",
                    _clip_step_fn(lambda ps, c=torch_cls, k=kwargs: c(ps, fused=True, **k), torch_clip)(pset, device, dtype), True),
            Variant(f"torch clip + foreach {label}",
                    _clip_step_fn(lambda ps, c=torch_cls, k=kwargs: c(ps, foreach=True, **k), torch_clip)(pset, device, dtype), True),
            Variant("fusedopt clip + step (separate)",
                    _clip_step_fn(lambda ps, c=ours_cls, k=kwargs: c(ps, **k), ours_clip)(pset, device, dtype)),
            Variant("fusedopt max_grad_norm (folded)",
                    _clip_step_fn(_folded(ours_cls, **kwargs), None)(pset, device, dtype)),
        ]
        per_element = (1 + arrays) * size  # folded minimum: the norm's read, then the step
        cases.append(Case("clip-step", f"clip + {label}, {pset.name}", device,
                          str(dtype).replace("torch.", ""), pset.numel, pset.count,
                          per_element * pset.numel, variants))
    return cases


GROUPS = {"clip": clip_cases, "clip-step": clip_step_cases}
