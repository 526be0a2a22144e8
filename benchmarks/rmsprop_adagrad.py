"""RMSprop and Adagrad step benchmarks: fusedopt against torch's for-loop, foreach, (Adagrad) fused
and torch.compile'd foreach paths, in the same run."""

from __future__ import annotations

import torch

import fusedopt
from harness import Case, Variant
from optimizers import _ELEMENT_SIZE, _step_fn, compiled_variant
from workloads import ParamSet


def _torch_fused_works(cls, device: str, dtype: torch.dtype) -> bool:
    """Whether torch has a fused path for cls on this device and dtype (torch.optim.RMSprop has none)."""
    try:
        p = torch.zeros(4, device=device, dtype=dtype)
        p.grad = torch.zeros_like(p)
        cls([p], fused=True).step()
        return True
    except (TypeError, RuntimeError):
        return False


def _variants(torch_cls, ours_cls, kwargs, pset: ParamSet, device: str, dtype: torch.dtype) -> list[Variant]:
    variants = [
        Variant("torch for-loop", _step_fn(lambda ps: torch_cls(ps, foreach=False, **kwargs), pset, device, dtype), True),
        Variant("torch foreach", _step_fn(lambda ps: torch_cls(ps, foreach=True, **kwargs), pset, device, dtype), True),
    ]
    if _torch_fused_works(torch_cls, device, dtype):
        variants.append(Variant("torch fused", _step_fn(lambda ps: torch_cls(ps, fused=True, **kwargs), pset, device, dtype), True))
    variants += compiled_variant(torch_cls, kwargs, pset, device, dtype)
    variants.append(Variant("fusedopt", _step_fn(lambda ps: ours_cls(ps, **kwargs), pset, device, dtype)))
    return variants


def rmsprop_cases(device: str, dtype: torch.dtype, param_sets: list[ParamSet]) -> list[Case]:
    size = _ELEMENT_SIZE[dtype]
    cases = []
    configs = [
        # read param, grad, square_avg; write param, square_avg
        ("plain", dict(lr=0.01), 5),
        # + momentum buffer and grad average, each read and written
        ("momentum, centered", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=1e-4), 9),
    ]
    for label, kwargs, arrays in configs:
        for pset in param_sets:
            cases.append(Case("rmsprop", f"{label}, {pset.name}", device, str(dtype).replace("torch.", ""),
                              pset.numel, pset.count, arrays * size * pset.numel,
                              _variants(torch.optim.RMSprop, fusedopt.optim.RMSprop, kwargs, pset, device, dtype)))
    return cases


def adagrad_cases(device: str, dtype: torch.dtype, param_sets: list[ParamSet]) -> list[Case]:
    size = _ELEMENT_SIZE[dtype]
    kwargs = dict(lr=0.01, lr_decay=1e-3, weight_decay=1e-4)
    cases = []
    for pset in param_sets:
        # read param, grad, sum; write param, sum
        cases.append(Case("adagrad", f"lr_decay, weight_decay, {pset.name}", device,
                          str(dtype).replace("torch.", ""), pset.numel, pset.count, 5 * size * pset.numel,
                          _variants(torch.optim.Adagrad, fusedopt.optim.Adagrad, kwargs, pset, device, dtype)))
    return cases


GROUPS = {"rmsprop": rmsprop_cases, "adagrad": adagrad_cases}
