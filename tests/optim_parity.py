"""Helpers shared by the optimizer tests: torch references (including an operation-by-operation
mirror with correctly rounded square roots), training loops, state snapshots, and the harnesses every
optimizer runs with its own parametrisation (bad input in a later group, GradScaler)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
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


class NativeReference:
    """A torch optimizer on copies of the params in their own dtype: the reference for float64 params,
    which the kernels update in float64 math."""

    def __init__(self, cls, params, **kwargs):
        self.params = [p.detach().clone() for p in params]
        self.opt = cls(self.params, **kwargs)

    def step(self, grads):
        for p, g in zip(self.params, grads):
            p.grad = g
        self.opt.step()


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


# ---------------------------------------------------------------------------------------------
# Bad input in a later param group: a clear error, raised before anything is modified

# What each kind of bad input must raise: sparse and complex grads are refused by the op's checks,
# a state of the wrong shape by the optimizer's collection pass (ValueError naming the key).
BAD_INPUT_ERRORS = {"sparse": RuntimeError, "complex": RuntimeError, "shape": ValueError,
                    "step": (RuntimeError, ValueError)}


def assert_op_rejects_before_writing(op, lists, kwargs, message):
    """op(*lists, **kwargs) raises a RuntimeError matching message, and every tensor in lists (sparse
    ones compared densely) keeps its values: the op checks everything before it writes anything."""
    before = [[t.clone() for t in lst] for lst in lists]
    with pytest.raises(RuntimeError, match=message):
        op(*lists, **kwargs)
    for lst, lst0 in zip(lists, before):
        for t, t0 in zip(lst, lst0):
            assert torch.equal(t.to_dense(), t0.to_dense())


def check_bad_input_in_later_group_modifies_nothing(cls, bad, *, kwargs, state_keys=(), message=None):
    """One step of optimizer class `cls` (constructor kwargs `kwargs`) with bad input in its second param
    group raises before anything is modified: params, grads and state of every group compare equal to a
    snapshot taken just before the step.

    bad: "sparse" (a sparse grad), "complex" (a complex param with a complex grad), "shape" (each state
    tensor in `state_keys` in turn of another shape, as a checkpoint of another model would give: as
    many elements, and another number of elements) or "step" (a per-param step count that is not a
    1-element tensor).
    Sparse and complex are checked twice: with the later group's params still without state (their
    first step) and with state from an earlier step (a complex param in a group added after it).
    message: the regex the error must match (default: bad itself; "<state key>.*shape" for shape)."""
    error = BAD_INPUT_ERRORS[bad]
    if bad in ("sparse", "complex"):
        scenarios = [(False, None, None), (True, None, None)]
    elif bad == "shape":  # another shape with as many elements, and another number of elements
        assert state_keys, "shape needs the state keys to corrupt"
        scenarios = [(True, key, shape) for key in state_keys for shape in ((3, 5), (7,))]
    else:
        scenarios = [(True, None, None)]
    for later_has_state, state_key, wrong_shape in scenarios:
        expected = message or (f"{state_key}.*shape" if bad == "shape" else bad)
        good = [torch.randn(4, requires_grad=True) for _ in range(2)]
        odd = torch.randn(5, 3, requires_grad=True)
        groups = [{"params": good}, {"params": [odd]}]
        c = torch.randn(4, dtype=torch.complex64, requires_grad=True) if bad == "complex" else None
        if c is not None and not later_has_state:
            groups[1] = {"params": [c]}  # the complex param's group is there from the start
        opt = cls(groups, **kwargs)
        for p in good + ([odd] if later_has_state else []):
            p.grad = torch.ones_like(p)
        opt.step()  # the good params (and odd if later_has_state) now have state
        if bad == "sparse":
            odd.grad = torch.sparse_coo_tensor([[0, 2]], torch.ones(2, 3), (5, 3))
        elif bad == "complex":
            if later_has_state:
                opt.add_param_group({"params": [c]})
            c.grad = torch.ones(4, dtype=torch.complex64)
        elif bad == "step":
            opt.state[odd]["step"] = torch.zeros(2)
        elif bad == "shape":
            assert state_key in opt.state[odd], (state_key, list(opt.state[odd]))
            opt.state[odd][state_key] = torch.zeros(wrong_shape)
        else:
            raise ValueError(f"unknown kind of bad input: {bad}")
        snap = snapshot(opt)
        with pytest.raises(error, match=expected):
            opt.step()
        assert_unchanged(opt, snap)


# ---------------------------------------------------------------------------------------------
# GradScaler


def check_grad_scaler_matches_torch(device, ours, refs, *, steps=6, inf_steps=(0, 3), clip=None,
                                    no_state_after_skipped_first_step=False, expected_steps=None,
                                    close=assert_close):
    """Train fresh_model(device) with torch.amp.GradScaler, once with each optimizer factory
    (ours: fusedopt, refs: torch; `factory(params)` -> optimizer), with non-finite grads on
    `inf_steps`. The fused step unscales grads inside the kernel and skips a step with an inf grad
    entirely (params, state, step counts unchanged); the scale backs off as with torch.

    clip: a max norm; scaler.unscale_() and clip_grad_norm_ before each step (step() then gets only
    found_inf, grad_scale None). no_state_after_skipped_first_step: every run (ours and torch's) has
    no state after the skipped first step. expected_steps: every param's 'step' after training, in
    ours and in each reference that keeps one.

    Afterwards ours equals each reference: the scale, params and grads (which step() leaves unscaled),
    compared with close(actual, expected, torch.float32)."""
    results = []
    for factory in [ours] + list(refs):
        model = fresh_model(device)
        opt = factory(model.parameters())
        scaler = torch.amp.GradScaler(device, init_scale=2.0**10, growth_interval=2)
        gen = torch.Generator().manual_seed(0)
        for step in range(steps):
            x = torch.randn(32, 8, generator=gen).to(device)
            if step in inf_steps:
                x[0, 0] = float("inf")  # non-finite grads on this step
            opt.zero_grad()
            scaler.scale(model(x).pow(2).mean()).backward()
            if clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(opt)
            scaler.update()
            if step == 0 and no_state_after_skipped_first_step:
                assert 0 in inf_steps
                assert len(opt.state) == 0, f"{type(opt)}: a skipped first step must not create state"
        results.append((model, opt, scaler))
    (m, o, s), refs_done = results[0], results[1:]
    for m_ref, o_ref, s_ref in refs_done:
        assert s.get_scale() == s_ref.get_scale()
        for a, b in zip(m.parameters(), m_ref.parameters()):
            close(a, b, torch.float32)
            close(a.grad, b.grad, torch.float32)  # grads are left unscaled after step()
            if expected_steps is not None:
                assert o.state[a]["step"].item() == expected_steps
                if "step" in o_ref.state[b]:
                    assert o_ref.state[b]["step"].item() == expected_steps


def check_op_unscales_and_skips(device, run, written, grads, *, steps=(), scale=8.0, shape=(1,),
                                close=assert_close):
    """GradScaler's contract at the op level. run(grad_scale=..., found_inf=...) calls the op once;
    `written` are all tensors it may write (params and state), `grads` the (scaled) grads it reads,
    `steps` its per-param step counts. With found_inf = 1 nothing changes, grads and step counts
    included; with found_inf = 0 each step count goes up by one and the grads are unscaled in place
    (divided by `scale`, compared with close). The caller then checks the update itself. grad_scale
    and found_inf are 1-element float32 tensors of `shape` on device."""
    def t(v):
        return torch.full(shape, v, device=device)

    before = [x.clone() for x in list(written) + list(grads) + list(steps)]
    g0 = [g.clone() for g in grads]
    run(grad_scale=t(scale), found_inf=t(1.0))
    for x, x0 in zip(list(written) + list(grads) + list(steps), before):
        assert torch.equal(x, x0)
    s0 = [s.item() for s in steps]
    run(grad_scale=t(scale), found_inf=t(0.0))
    assert [s.item() for s in steps] == [v + 1 for v in s0]
    for g, g_ in zip(grads, g0):
        close(g, g_ / scale, torch.float32)
