"""Dropout benchmarks: fusedopt.nn.functional.dropout against torch.nn.functional.dropout, eager and
torch.compile'd (the functional compiled; Inductor generates its own random numbers), forward and
forward+backward, with the bytes each saves for backward (measured with saved_tensors_hooks in the same
run and shown in the case name).

Every call allocates its output (and torch its noise tensor) afresh, as in training; on CPU, first-touch
page faults of those fresh buffers are a large part of both sides' time and are left in on purpose.
The in-place cases show the same work without a fresh output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

import fusedopt.nn.functional as FF
from harness import OPTIONS, Case, Variant, warmed

_SIZE = {torch.float32: 4, torch.float64: 8, torch.float16: 2, torch.bfloat16: 2}
P = 0.1


def saved_bytes(fn, x) -> int:
    """Bytes of the tensors autograd saves for backward in one forward call."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.untyped_storage().nbytes() if not (t is x) else 0  # the input is not extra memory
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return total


def _mb(b: int) -> str:
    return f"{b / 1e6:.1f} MB" if b >= 1e6 else f"{b / 1e3:.1f} kB"


def _fwd_bwd(f, make, compile=False):
    """A setup for forward+backward of f(x, P) on x = make() (grad_output made the same way); with
    compile=True it compiles f (torch.compile) and warms the step up before timing."""
    def setup():
        x = make().requires_grad_(True)
        g = make()
        h = torch.compile(f) if compile else f

        def step():
            h(x, P).backward(g)
            x.grad = None
        return warmed(step) if compile else step
    return setup


def dropout_cases(device: str, dtype: torch.dtype, _sets) -> list[Case]:
    sizes = [(12_800_000, torch.float32), (12_800_000, torch.bfloat16)]
    if OPTIONS.quick:
        sizes = [(200_000, torch.float32), (200_000, torch.bfloat16)]
    cases = []
    for n, dt in sizes:
        es = _SIZE[dt]
        label = f"{n / 1e6:g}M {str(dt).replace('torch.', '')} p={P}"

        # With compile=True, setup compiles f (torch.compile) and warms the step up before timing.
        def fwd(f, compile=False, n=n, dt=dt):
            def setup():
                x = torch.randn(n, device=device, dtype=dt)
                g = torch.compile(f) if compile else f
                fn = lambda: g(x, P)  # noqa: E731
                return warmed(fn) if compile else fn
            return setup

        def fwd_bwd(f, compile=False, n=n, dt=dt):
            return _fwd_bwd(f, lambda: torch.randn(n, device=device, dtype=dt), compile)

        def inplace(f, compile=False, n=n, dt=dt):
            def setup():
                x = torch.randn(n, device=device, dtype=dt)
                g = torch.compile(f) if compile else f
                fn = lambda: g(x, P, inplace=True)  # noqa: E731
                return warmed(fn) if compile else fn
            return setup

        def variants(make):
            vs = [Variant("torch", make(TF.dropout), True)]
            if OPTIONS.compile:
                vs.append(Variant("torch compiled", make(TF.dropout, compile=True), is_torch=True, compiled=True))
            return vs + [Variant("fusedopt", make(FF.dropout))]

        probe = torch.randn(n, device=device, dtype=dt, requires_grad=True)
        saved_t, saved_f = saved_bytes(lambda t: TF.dropout(t, P), probe), saved_bytes(lambda t: FF.dropout(t, P), probe)
        del probe
        # fwd: read x, write out (+ mask n/8); fwd+bwd adds read grad, (mask), write grad_input
        cases.append(Case("dropout", f"forward, {label}", device, str(dt).replace("torch.", ""), n, 1, 2 * es * n,
                          variants(fwd)))
        cases.append(Case("dropout", f"forward in place, {label}", device, str(dt).replace("torch.", ""), n, 1,
                          2 * es * n, variants(inplace)))
        cases.append(Case("dropout", f"forward+backward, {label}, saved for backward: torch {_mb(saved_t)}, "
                          f"fusedopt {_mb(saved_f)}", device, str(dt).replace("torch.", ""), n, 1, 4 * es * n,
                          variants(fwd_bwd)))

    # Channels-last activations (a CNN trained in channels_last): element-wise and channel-wise dropout,
    # forward+backward, whose outputs and grads stay channels-last.
    shape = (4, 16, 56, 56) if OPTIONS.quick else (32, 64, 80, 80)
    n = shape[0] * shape[1] * shape[2] * shape[3]
    for name, torch_fn, ours in (("dropout", TF.dropout, FF.dropout), ("dropout2d", TF.dropout2d, FF.dropout2d)):
        def cl_fwd_bwd(f, compile=False):
            return _fwd_bwd(f, lambda: torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last),
                            compile)

        vs = [Variant("torch", cl_fwd_bwd(torch_fn), True)]
        if OPTIONS.compile:
            vs.append(Variant("torch compiled", cl_fwd_bwd(torch_fn, compile=True), is_torch=True, compiled=True))
        vs.append(Variant("fusedopt", cl_fwd_bwd(ours)))
        cases.append(Case("dropout", f"{name} forward+backward, channels_last {shape} float32 p={P}", device,
                          "float32", n, 1, 4 * 4 * n, vs))
    return cases


GROUPS = {"dropout": dropout_cases}
