"""Adam/AdamW benchmarks: fusedopt against torch's for-loop, foreach and fused paths in the same run.

Groups: ``adam`` (AdamW on the standard sets: 16 large tensors and 2,000 small ones, 16M parameters
each), ``adam-models`` (the parameter shapes of GPT-2 124M, BERT-base and ResNet-50) and
``adam-sweep`` (tensor count at a fixed total size) and ``adam-host`` (20,000 one-element params: the
per-param host cost alone, which dominates a GPU step over many small tensors; the CPU measures it
without a GPU)."""

from __future__ import annotations

import torch

import fusedopt
import model_shapes
from harness import OPTIONS, Case
from optimizers import _ELEMENT_SIZE, _step_fn, _torch_variants
from harness import Variant
from workloads import ParamSet, equal_split

_ADAMW = dict(lr=1e-3, weight_decay=1e-2)


def _adamw_case(group: str, device: str, dtype: torch.dtype, pset: ParamSet) -> Case:
    # read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq
    per_element = 7 * _ELEMENT_SIZE[dtype]
    variants = _torch_variants(torch.optim.AdamW, _ADAMW, pset, device, dtype)
    variants.append(Variant("fusedopt", _step_fn(lambda ps: fusedopt.optim.AdamW(ps, **_ADAMW), pset, device, dtype)))
    return Case(group, f"AdamW, {pset.name}", device, str(dtype).replace("torch.", ""), pset.numel,
                pset.count, per_element * pset.numel, variants)


def adam_cases(device: str, dtype: torch.dtype, param_sets: list[ParamSet]) -> list[Case]:
    return [_adamw_case("adam", device, dtype, pset) for pset in param_sets]


def adam_model_cases(device: str, dtype: torch.dtype, param_sets: list[ParamSet]) -> list[Case]:
    return [_adamw_case("adam-models", device, dtype, pset) for pset in model_shapes.model_sets(OPTIONS.quick, device)]


def adam_sweep_cases(device: str, dtype: torch.dtype, param_sets: list[ParamSet]) -> list[Case]:
    total = (1 << 20) if OPTIONS.quick else (16 << 20)
    counts = (1, 100, 1000) if OPTIONS.quick else (1, 16, 128, 1024, 4096, 16384)
    return [_adamw_case("adam-sweep", device, dtype, equal_split(total, n)) for n in counts]


def adam_host_cases(device: str, dtype: torch.dtype, param_sets: list[ParamSet]) -> list[Case]:
    count = 1000 if OPTIONS.quick else 20000
    return [_adamw_case("adam-host", device, dtype, equal_split(count, count))]


GROUPS = {"adam": adam_cases, "adam-models": adam_model_cases, "adam-sweep": adam_sweep_cases,
          "adam-host": adam_host_cases}
