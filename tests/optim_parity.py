"""Helpers shared by the RMSprop and Adagrad tests: torch references (including an operation-by-
operation mirror with correctly rounded square roots), training loops and state snapshots."""

from __future__ import annotations

import copy

import numpy as np
import torch

from conftest import TOL

# torch 2.13's CPU sqrt (MKL VML) is not correctly rounded: about 0.7% of float32 and float64 results
# are one ulp off the exact root. The fused kernels' sqrt is correctly rounded, so against torch itself
# results agree to rounding (tolerances below), and bitwise against the mirrors in the test files,
# which replay torch's single-tensor path op by op with a correctly rounded sqrt.
PARITY_TOL = dict(TOL)
PARITY_TOL[torch.float64] = dict(rtol=1e-10, atol=1e-12)
PARITY_TOL[torch.float32] = dict(rtol=1e-4, atol=1e-5)


def exact_sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root on the CPU (numpy uses the hardware instruction)."""
    x = x.detach().cpu()
    out = torch.empty_like(x)
    np.sqrt(x.numpy(), out=out.numpy())
    return out


def assert_close(actual, expected, dtype, msg=""):
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), **PARITY_TOL[dtype], msg=msg)


class Float32Reference:
    """A torch optimizer on float32 copies whose params and state are rounded to `dtype` after every
    step: the math the fused kernels do for float16/bfloat16 (load, compute in float32, store rounded)."""

    def __init__(self, cls, params, dtype, **kwargs):
        self.dtype = dtype
        self.params = [p.detach().float() for p in params]
        self.opt = cls(self.params, **kwargs)

    def step(self, grads):
        for p, g in zip(self.params, grads):
            p.grad = None if g is None else g.float()
        self.opt.step()
        with torch.no_grad():
            for p in self.params:
                p.copy_(p.to(self.dtype))
                for k, v in self.opt.state[p].items():
                    if k != "step" and isinstance(v, torch.Tensor):
                        v.copy_(v.to(self.dtype))


def snapshot(opt):
    return ([p.detach().clone() for g in opt.param_groups for p in g["params"]],
            [None if p.grad is None else p.grad.clone() for g in opt.param_groups for p in g["params"]],
            copy.deepcopy(opt.state_dict()["state"]))


def assert_unchanged(opt, snap):
    params, grads, state = snap
    flat = [p for g in opt.param_groups for p in g["params"]]
    for p, p0, g0 in zip(flat, params, grads):
        assert torch.equal(p.detach(), p0)
        if g0 is not None and p.grad is not None and p.grad.layout == torch.strided:
            assert torch.equal(p.grad, g0)
    now = opt.state_dict()["state"]
    assert now.keys() == state.keys()
    for k in state:
        assert now[k].keys() == state[k].keys()
        for name in state[k]:
            assert torch.equal(torch.as_tensor(now[k][name]).cpu(), torch.as_tensor(state[k][name]).cpu())


def fresh_model(device, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).to(device)


def train(model, opt, steps, device, seed=0, closure=False, scheduler=None):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 8, generator=gen).to(device)

        def loss_fn():
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            return loss

        if closure:
            opt.step(loss_fn)
        else:
            loss_fn()
            opt.step()
        if scheduler is not None:
            scheduler.step()
