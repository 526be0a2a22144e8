"""Optimizer-step benchmarks: fusedopt against torch's for-loop, foreach and fused paths, and torch's
foreach step compiled with torch.compile (as PyTorch's compiled-optimizer recipe does it: a compiled
function that calls opt.step(); compiled and warmed up before timing)."""

from __future__ import annotations

from typing import Callable

import torch

import fusedopt
from harness import OPTIONS, Case, Variant, check_compile_size, compiled
from workloads import ParamSet

_ELEMENT_SIZE = {torch.float32: 4, torch.float64: 8, torch.float16: 2, torch.bfloat16: 2}


def _step_fn(make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer], pset: ParamSet,
             device: str, dtype: torch.dtype) -> Callable[[], Callable[[], None]]:
    def setup():
        params = pset.make(device, dtype)
        for p, g in zip(params, pset.make(device, dtype, seed=1)):
            p.grad = g
        opt = make_optimizer(params)
        opt.step()  # creates the state outside the timed region
        return opt.step

    return setup


def _compiled_step_fn(make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer], pset: ParamSet,
                      device: str, dtype: torch.dtype) -> Callable[[], Callable[[], None]]:
    def setup():
        check_compile_size(pset.count)
        params = pset.make(device, dtype)
        for p, g in zip(params, pset.make(device, dtype, seed=1)):
            p.grad = g
        opt = make_optimizer(params)
        opt.step()  # creates the state outside the compiled region and the timed one

        def step():
            opt.step()

        return compiled(step)

    return setup


def compiled_variant(cls, kwargs, pset, device, dtype) -> list[Variant]:
    """torch's foreach step under torch.compile, as a torch variant ([] with --no-compile)."""
    if not OPTIONS.compile:
        return []
    return [Variant("torch compiled (foreach)",
                    _compiled_step_fn(lambda ps: cls(ps, foreach=True, **kwargs), pset, device, dtype),
                    is_torch=True, compiled=True)]


def _torch_variants(cls, kwargs, pset, device, dtype) -> list[Variant]:
    variants = [
        Variant("torch for-loop", _step_fn(lambda ps: cls(ps, foreach=False, **kwargs), pset, device, dtype), True),
        Variant("torch foreach", _step_fn(lambda ps: cls(ps, foreach=True, **kwargs), pset, device, dtype), True),
    ]
    variants.append(Variant("torch fused", _step_fn(lambda ps: cls(ps, fused=True, **kwargs), pset, device, dtype), True))
    return variants + compiled_variant(cls, kwargs, pset, device, dtype)


def sgd_cases(device: str, dtype: torch.dtype, param_sets: list[ParamSet]) -> list[Case]:
    cases = []
    size = _ELEMENT_SIZE[dtype]
    for momentum in (0.9,):
        kwargs = dict(lr=0.01, momentum=momentum, weight_decay=1e-4)
        # read param, grad, buffer; write param, buffer
        per_element = 5 * size if momentum else 3 * size
        for pset in param_sets:
            variants = _torch_variants(torch.optim.SGD, kwargs, pset, device, dtype)
            variants.append(Variant("fusedopt", _step_fn(lambda ps: fusedopt.optim.SGD(ps, **kwargs), pset, device, dtype)))
            cases.append(Case("sgd", f"momentum, {pset.name}", device, str(dtype).replace("torch.", ""),
                              pset.numel, pset.count, per_element * pset.numel, variants))
    return cases


GROUPS = {"sgd": sgd_cases}
