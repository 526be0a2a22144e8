"""The GPU goals of the optimizer and clipping issues, as cases of their own (group ``gpu-goals``; CUDA
only, it adds no case on other devices; --quick keeps the tensor counts at 1/64 of the sizes):

- AdamW float32 over 1B parameters in 16 tensors: its *% of copy* column is the goal (>= 90% of the
  device-to-device copy bandwidth measured in the same run);
- AdamW float32 over 20,000 tensors of 4,096 elements, where host overhead dominates (>= 5x torch
  fused);
- clip_grad_norm_ over 100M parameters in 10,000 tensors, clipping (goal: under 2 ms).

GPT-2 124M's shapes are in ``adam-models``. Only torch's foreach and fused paths are timed here: its
for-loop path takes seconds per step over 20,000 tensors, and each variant keeps its own params,
grads and states (the 1B case holds 16 GB per variant). Tensors are drawn on the device, which at 1B
parameters is far quicker than drawing them on the host."""

from __future__ import annotations

import dataclasses

import torch

import fusedopt
from clip import _ELEMENT_SIZE, _clip_fn
from harness import OPTIONS, Case, Variant
from optimizers import _step_fn
from workloads import ParamSet, equal_split

_ADAMW = dict(lr=1e-3, weight_decay=1e-2)


@dataclasses.dataclass(frozen=True)
class _DeviceParamSet(ParamSet):
    """A ParamSet whose tensors are drawn on the device they are made for."""

    def make(self, device: str, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
        g = torch.Generator(device=device).manual_seed(seed)
        return [torch.randn(s, generator=g, device=device, dtype=dtype) for s in self.shapes]


def _on_device(pset: ParamSet) -> _DeviceParamSet:
    return _DeviceParamSet(pset.name, pset.shapes)


def _adamw_case(pset: ParamSet, device: str, dtype: torch.dtype) -> Case:
    variants = [Variant(f"torch {path}", _step_fn(lambda ps, path=path: torch.optim.AdamW(ps, **{path: True}, **_ADAMW),
                                                 pset, device, dtype), is_torch=True)
                for path in ("foreach", "fused")]
    variants.append(Variant("fusedopt", _step_fn(lambda ps: fusedopt.optim.AdamW(ps, **_ADAMW), pset, device, dtype)))
    # read param, grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq
    return Case("gpu-goals", f"AdamW, {pset.name}", device, str(dtype).replace("torch.", ""), pset.numel,
                pset.count, 7 * _ELEMENT_SIZE[dtype] * pset.numel, variants)


def _clip_case(pset: ParamSet, device: str, dtype: torch.dtype) -> Case:
    variants = [
        Variant("torch foreach", _clip_fn(torch.nn.utils.clip_grad_norm_, True, foreach=True)(pset, device, dtype), True),
        Variant("fusedopt", _clip_fn(fusedopt.nn.utils.clip_grad_norm_, True)(pset, device, dtype)),
    ]
    # read the grads for the norm, then read and write them to scale
    return Case("gpu-goals", f"clip_grad_norm_, clipping, {pset.name}", device, str(dtype).replace("torch.", ""),
                pset.numel, pset.count, 3 * _ELEMENT_SIZE[dtype] * pset.numel, variants)


def gpu_goal_cases(device: str, dtype: torch.dtype, _sets) -> list[Case]:
    if not device.startswith("cuda"):
        return []
    shrink = 64 if OPTIONS.quick else 1  # --quick: the same tensor counts, 1/64 of the sizes
    return [
        _adamw_case(_on_device(equal_split((1 << 30) // shrink, 16)), device, dtype),
        _adamw_case(_on_device(equal_split(20000 * 4096 // shrink, 20000)), device, dtype),
        _clip_case(_on_device(equal_split(100_000_000 // shrink, 10_000)), device, dtype),
    ]


GROUPS = {"gpu-goals": gpu_goal_cases}
