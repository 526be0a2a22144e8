"""The cost of DTensor params (FSDP2, tensor parallelism): SGD steps on DTensors of a one-process mesh,
where each local shard is the whole tensor, so the kernels do the same work as on plain tensors and
any difference is the host-side unwrapping. torch's foreach path on the same DTensors is the
reference; fusedopt on plain tensors of the same shapes shows the unwrapping overhead."""

from __future__ import annotations

import atexit

import torch
import torch.distributed as dist

import fusedopt
from harness import Case, Variant
from workloads import ParamSet

_ELEMENT_SIZE = {torch.float32: 4, torch.float64: 8, torch.float16: 2, torch.bfloat16: 2}


def _mesh(device: str):
    """A one-process mesh on `device`'s type (starts a one-process group once)."""
    from torch.distributed.device_mesh import init_device_mesh
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        # An in-process store: one rank needs no TCP port or store server thread.
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        atexit.register(dist.destroy_process_group)
    return init_device_mesh(device.split(":")[0], (1,))


def _step_fn(make_optimizer, pset: ParamSet, device: str, dtype: torch.dtype, sharded: bool):
    def setup():
        params = pset.make(device, dtype)
        grads = pset.make(device, dtype, seed=1)
        if sharded:
            from torch.distributed.tensor import Shard, distribute_tensor
            mesh = _mesh(device)
            params = [distribute_tensor(p, mesh, [Shard(0)]) for p in params]
            grads = [distribute_tensor(g, mesh, [Shard(0)]) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g
        opt = make_optimizer(params)
        opt.step()  # creates the state outside the timed region
        return opt.step

    return setup


def sgd_dtensor_cases(device: str, dtype: torch.dtype, param_sets: list[ParamSet]) -> list[Case]:
    if not dist.is_available():
        return []
    kwargs = dict(lr=0.01, momentum=0.9, weight_decay=1e-4)
    per_element = 5 * _ELEMENT_SIZE[dtype]  # read param, grad, buffer; write param, buffer
    cases = []
    for pset in param_sets:
        variants = [
            Variant("torch foreach (DTensor)",
                    _step_fn(lambda ps: torch.optim.SGD(ps, foreach=True, **kwargs), pset, device, dtype, True),
                    True),
            Variant("fusedopt (DTensor)",
                    _step_fn(lambda ps: fusedopt.optim.SGD(ps, **kwargs), pset, device, dtype, True)),
            Variant("fusedopt (plain tensors)",
                    _step_fn(lambda ps: fusedopt.optim.SGD(ps, **kwargs), pset, device, dtype, False)),
        ]
        cases.append(Case("sgd-dtensor", f"momentum, {pset.name}", device, str(dtype).replace("torch.", ""),
                          pset.numel, pset.count, per_element * pset.numel, variants))
    return cases


GROUPS = {"sgd-dtensor": sgd_dtensor_cases}
