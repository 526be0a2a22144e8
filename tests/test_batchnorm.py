"""fusedopt.nn.BatchNorm*d, fusedopt.nn.functional.batch_norm and the torch.ops.fusedopt.batch_norm_*
ops against torch.nn.BatchNorm*d."""

from __future__ import annotations

import copy
import math
import zlib

import pytest
import torch

import fusedopt
import fusedopt.nn as fnn
from conftest import DEVICES

# Tolerances per dtype, for one forward/backward against torch:
# float32: reduction orders differ (torch sums in double on CPU, we merge float blocks), a few ulps
# of the outputs and ~1e-5 relative on sums over thousands of values;
# float64: rounding only;
# float16/bfloat16: both sides compute in float32 and round once on store, so one ulp of the stored
# type (2**-10, 2**-7 relative) plus the float32 differences.
TOL = {
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float16: dict(rtol=4e-3, atol=4e-3),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}
DTYPES = list(TOL)
HALF = (torch.float16, torch.bfloat16)

# (N, C, *spatial): N=1 with spatial > 1, C=1, odd sizes, C over one and several SIMD widths (8/16 lanes
# on AVX2), S == 1 (the rows walk for contiguous input); for the CPU's contiguous statistics (blocks of
# 1,024 values): many short planes grouped into several blocks, a plane of half a block and one of more.
SHAPES = [
    (2, 3), (7, 1), (5, 19), (1, 4, 7), (3, 5, 9), (4, 1, 6), (2, 3, 4, 5), (1, 1, 3, 3), (4, 17, 5, 7),
    (3, 33, 2, 3), (2, 2, 1, 1), (2, 3, 2, 3, 4), (2, 20, 3, 1, 5), (1, 9, 2, 2, 2),
    (300, 2, 5), (3, 2, 700), (2, 3, 1100),
]
LAYOUTS = ["contiguous", "channels_last", "strided", "offset"]
MODULES = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}
FUSED = {torch.nn.BatchNorm1d: fnn.BatchNorm1d, torch.nn.BatchNorm2d: fnn.BatchNorm2d,
         torch.nn.BatchNorm3d: fnn.BatchNorm3d}


def make_input(shape, dtype, device, layout, gen, scale=1.0, shift=0.0):
    """Random values in float64 rounded to dtype, in one of several memory layouts:
    channels_last (channels_last(_3d) for 4-d/5-d; others contiguous), strided (every other element of
    the last dim: neither layout, so the op makes it contiguous), offset (storage offset 1)."""
    def rand(s):
        return (torch.randn(s, dtype=torch.float64, generator=gen) * scale + shift).to(dtype)
    if layout == "channels_last" and len(shape) in (4, 5):
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        return rand(shape).contiguous(memory_format=fmt).to(device)
    if layout == "strided":
        return rand((*shape[:-1], shape[-1] * 2)).to(device)[..., ::2]
    if layout == "offset":
        n = 1
        for s in shape:
            n *= s
        return rand((n + 1,)).to(device)[1:].view(shape)
    return rand(shape).to(device)


def make_pair(shape, dtype, device, gen, **kwargs):
    """torch's module and fusedopt's with the same random affine parameters and running stats."""
    cls = MODULES[len(shape)]
    ref = cls(shape[1], **kwargs).to(device)
    with torch.no_grad():
        if ref.affine:
            ref.weight.copy_(torch.rand(shape[1], generator=gen) + 0.5)
            ref.bias.copy_(torch.randn(shape[1], generator=gen))
        if ref.track_running_stats:
            ref.running_mean.copy_(torch.randn(shape[1], generator=gen))
            ref.running_var.copy_(torch.rand(shape[1], generator=gen) + 0.5)
    ours = FUSED[cls](shape[1], **kwargs).to(device)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def reference(ref, x, dtype):
    """torch's module run on x; for half types run in float32 on the widened input (the math the
    kernels do), outputs rounded back to dtype, so both sides differ only by the final rounding."""
    if dtype in HALF:
        return ref, x.float()
    return ref, x


def assert_close(actual, expected, dtype, msg=""):
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), **TOL[dtype], msg=msg)


def run_train_step(ref, ours, x, dtype, gen):
    x_ref = (x.float() if dtype in HALF else x).detach().requires_grad_()
    x_ours = x.detach().requires_grad_()
    out_ref = ref(x_ref)
    out_ours = ours(x_ours)
    assert out_ours.dtype == x.dtype and out_ours.shape == x.shape
    dy = torch.randn(x.shape, dtype=torch.float64, generator=gen).to(dtype).to(x.device)
    out_ref.backward(dy.to(out_ref.dtype))
    out_ours.backward(dy)
    assert_close(out_ours, out_ref.to(dtype), dtype, "output")
    assert_close(x_ours.grad, x_ref.grad.to(dtype), dtype, "grad_input")
    return out_ours


def check_module_state(ref, ours, dtype, count):
    """count: the (n, spatial) positions of a channel in the step's input."""
    # Parameters and buffers are float32 (float64 for float64 input) on both sides.
    pt = TOL[torch.float64 if dtype == torch.float64 else torch.float32]
    if dtype in HALF:
        pt = dict(rtol=1e-3, atol=1e-3)  # sums of values rounded to half differ from float32 sums
    for name in ("running_mean", "running_var"):
        a, b = getattr(ours, name), getattr(ref, name)
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a.double(), b.double(), **pt, msg=name)
    if ref.num_batches_tracked is not None:
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked)
    if ref.affine:
        # grad_weight and grad_bias are sums over every (n, spatial) position of a channel. Summed in
        # other orders, float sums of `count` unit-scale terms differ by about eps * sqrt(count) in
        # absolute terms, however small the sum (a grad_bias near 0 from cancellation): scale atol so.
        gt = dict(pt, atol=pt["atol"] * math.sqrt(count)) if dtype not in HALF else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(ours.weight.grad.double(), ref.weight.grad.double(), **gt, msg="grad_weight")
        torch.testing.assert_close(ours.bias.grad.double(), ref.bias.grad.double(), **gt, msg="grad_bias")


def module_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_training_parity(shape, layout, dtype, device):
    # crc32, not hash(): hash() of strings changes with every interpreter (PYTHONHASHSEED), and with it
    # the data; a failure must reproduce.
    gen = torch.Generator().manual_seed(zlib.crc32(repr((shape, layout, str(dtype))).encode()))
    ref, ours = make_pair(shape, dtype, device, gen)
    ref.to(module_dtype(dtype))
    ours.to(module_dtype(dtype))
    for _ in range(2):  # two steps: the running stats accumulate
        ref.zero_grad()
        ours.zero_grad()
        x = make_input(shape, dtype, device, layout, gen)
        run_train_step(ref, ours, x, dtype, gen)
        check_module_state(ref, ours, dtype, x.numel() // shape[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("options", [
    dict(momentum=None), dict(affine=False), dict(track_running_stats=False), dict(momentum=0.3, eps=1e-3),
    dict(affine=False, track_running_stats=False),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_training_options(options, dtype, layout, device):
    gen = torch.Generator().manual_seed(1)
    shape = (3, 10, 4, 5)
    ref, ours = make_pair(shape, dtype, device, gen, **options)
    ref.to(module_dtype(dtype))
    ours.to(module_dtype(dtype))
    for _ in range(3):
        ref.zero_grad()
        ours.zero_grad()
        run_train_step(ref, ours, make_input(shape, dtype, device, layout, gen), dtype, gen)
        check_module_state(ref, ours, dtype, math.prod(shape) // shape[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4, 5), (1, 17, 3, 3), (2, 3, 2, 3, 4)], ids=str)
@pytest.mark.parametrize("track", [True, False], ids=["running-stats", "no-running-stats"])
def test_eval_parity(track, shape, layout, dtype, device):
    """eval with running stats normalises with them; without (track_running_stats=False) it uses the
    batch's statistics, as torch."""
    gen = torch.Generator().manual_seed(2)
    ref, ours = make_pair(shape, dtype, device, gen, track_running_stats=track)
    ref.to(module_dtype(dtype)).eval()
    ours.to(module_dtype(dtype)).eval()
    run_train_step(ref, ours, make_input(shape, dtype, device, layout, gen), dtype, gen)
    check_module_state(ref, ours, dtype, math.prod(shape) // shape[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_functional_matches_torch(layout, device):
    gen = torch.Generator().manual_seed(3)
    x = make_input((4, 6, 5, 3), torch.float32, device, layout, gen)
    w, b = torch.rand(6, generator=gen).to(device) + 0.5, torch.randn(6, generator=gen).to(device)
    rm, rv = torch.randn(6, generator=gen).to(device), torch.rand(6, generator=gen).to(device) + 0.5
    for training in (True, False):
        rm1, rv1, rm2, rv2 = rm.clone(), rv.clone(), rm.clone(), rv.clone()
        out = fnn.functional.batch_norm(x, rm1, rv1, w, b, training, 0.2, 1e-4)
        exp = torch.nn.functional.batch_norm(x, rm2, rv2, w, b, training, 0.2, 1e-4)
        assert_close(out, exp, torch.float32)
        assert_close(rm1, rm2, torch.float32)
        assert_close(rv1, rv2, torch.float32)
        assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    # training without running stats
    assert_close(fnn.functional.batch_norm(x, None, None, training=True),
                 torch.nn.functional.batch_norm(x, None, None, training=True), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_large_mean_no_cancellation(dtype, layout, device):
    """Data with a mean 1e4 times its spread (float32; 100x for the half types, whose precision cannot
    hold more): statistics match a float64 reference on the same values. A float32 sum of squares
    (E[x^2] - E[x]^2) would get the variance wrong by orders of magnitude; checked below so the test
    is sharp."""
    gen = torch.Generator().manual_seed(4)
    ratio = 1e4 if dtype == torch.float32 else 1e2
    x = make_input((8, 3, 33, 31), dtype, device, layout, gen, scale=1.0, shift=ratio)
    mean, var = torch.ops.fusedopt.batch_norm_stats(x)
    x64 = x.double()
    var64, mean64 = torch.var_mean(x64, dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean.double(), mean64, rtol=1e-6, atol=0)
    torch.testing.assert_close(var.double(), var64, rtol=1e-4, atol=0)
    naive = (x.float() ** 2).mean(dim=(0, 2, 3)) - x.float().mean(dim=(0, 2, 3)) ** 2
    if dtype == torch.float32:
        assert ((naive.double() - var64).abs() / var64).max() > 1e-2
    out = fnn.functional.batch_norm(x, None, None, training=True)
    expected = (x64 - mean64.view(1, -1, 1, 1)) / torch.sqrt(var64.view(1, -1, 1, 1) + 1e-5)
    # the output's error is that of the stored mean (one ulp of 1e4 ~ 1e-3 in float32) times invstd.
    torch.testing.assert_close(out.double(), expected, rtol=TOL[dtype]["rtol"], atol=2e-3 if dtype == torch.float32 else TOL[dtype]["atol"])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 3, 3, 2), (2, 2, 2, 2, 3)], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
def test_gradcheck(affine, training, shape, layout):
    gen = torch.Generator().manual_seed(5)
    x = make_input(shape, torch.float64, "cpu", layout, gen).requires_grad_()
    C = shape[1]
    w = (torch.rand(C, dtype=torch.float64, generator=gen) + 0.5).requires_grad_() if affine else None
    b = torch.randn(C, dtype=torch.float64, generator=gen).requires_grad_() if affine else None
    rm = torch.randn(C, dtype=torch.float64, generator=gen)
    rv = torch.rand(C, dtype=torch.float64, generator=gen) + 0.5

    def fn(x, w, b):
        # fresh running stats per call: training updates them in place
        return fnn.functional.batch_norm(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-3)

    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_grads_for_every_combination_of_what_requires_grad(training):
    """Each of input, weight and bias absent (None), given without grad, or requiring grad: the grads
    that are wanted equal torch's, and no others are made (autograd numbers the inputs of the C++ node
    without the absent ones, so an absent weight moves bias's place)."""
    import itertools
    gen = torch.Generator().manual_seed(8)
    x0 = torch.randn(4, 3, 5, dtype=torch.float64, generator=gen)
    w0, b0 = torch.rand(3, dtype=torch.float64, generator=gen) + 0.5, torch.randn(3, dtype=torch.float64, generator=gen)
    rm, rv = torch.randn(3, dtype=torch.float64, generator=gen), torch.rand(3, dtype=torch.float64, generator=gen) + 0.5
    dy = torch.randn(4, 3, 5, dtype=torch.float64, generator=gen)
    for x_grad, w_kind, b_kind in itertools.product([True, False], ["none", "fixed", "grad"], ["none", "fixed", "grad"]):
        if not x_grad and "grad" not in (w_kind, b_kind):
            continue
        outs = []
        for F in (fnn.functional, torch.nn.functional):
            x = x0.clone().requires_grad_(x_grad)
            w = None if w_kind == "none" else w0.clone().requires_grad_(w_kind == "grad")
            b = None if b_kind == "none" else b0.clone().requires_grad_(b_kind == "grad")
            F.batch_norm(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-3).backward(dy)
            outs.append([t.grad if t is not None else None for t in (x, w, b)])
        for ours, theirs in zip(*outs):
            assert (ours is None) == (theirs is None), (x_grad, w_kind, b_kind)
            if ours is not None:
                torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,layout", [((5, 3), "contiguous"), ((4, 3, 2, 3), "channels_last"),
                                          ((3, 4, 5), "strided")])
@pytest.mark.parametrize("device", DEVICES)
def test_double_backward_matches_torch(training, shape, layout, device):
    """create_graph=True: the backward runs through torch's batch norm, so second-order grads (gradient
    penalties, MAML) are torch's; gradgradcheck in float64 over every input that can require grad."""
    gen = torch.Generator().manual_seed(2)
    x = make_input(shape, torch.float64, device, layout, gen).requires_grad_(True)
    w = torch.rand(shape[1], dtype=torch.float64, generator=gen).add_(0.5).to(device).requires_grad_(True)
    b = torch.randn(shape[1], dtype=torch.float64, generator=gen).to(device).requires_grad_(True)
    rm = torch.randn(shape[1], dtype=torch.float64, generator=gen).to(device)
    rv = torch.rand(shape[1], dtype=torch.float64, generator=gen).add_(0.5).to(device)

    def f(batch_norm):
        return lambda x, w, b: batch_norm(x, rm.clone(), rv.clone(), w, b, training=training, eps=1e-3)

    assert torch.autograd.gradgradcheck(f(fnn.functional.batch_norm), (x, w, b))
    # Gradient penalties added to a loss, with a grad_output that requires grad (y ** 3) and with a
    # constant one (c): the grad of x depends on x and w either way.
    c = torch.randn(shape, dtype=torch.float64, generator=gen).to(device)
    for outer in (lambda y: y.pow(3).sum(), lambda y: (y * c).sum()):
        grads = {}
        for batch_norm in (fnn.functional.batch_norm, torch.nn.functional.batch_norm):
            x.grad = w.grad = b.grad = None
            y = f(batch_norm)(x, w, b)
            (gx,) = torch.autograd.grad(outer(y), x, create_graph=True)
            (gx.pow(2).sum() + y.sum()).backward()
            grads[batch_norm] = [t.grad for t in (x, w, b)]
        for o, e in zip(grads[fnn.functional.batch_norm], grads[torch.nn.functional.batch_norm]):
            torch.testing.assert_close(o, e, rtol=1e-10, atol=1e-12)


def test_first_order_backward_stays_on_our_kernels():
    """Without create_graph the backward is our kernels' (torch's batch norm is not called)."""
    x = torch.randn(8, 4, 5, 5, requires_grad=True)
    m = fnn.BatchNorm2d(4)
    y = m(x)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y.backward(torch.randn_like(y))
    names = {e.key for e in prof.key_averages()}
    assert not any("aten::native_batch_norm" in n or n == "aten::batch_norm" for n in names), names
    assert any(n.startswith("fusedopt::batch_norm") for n in names), names


def op_samples(device="cpu"):
    gen = torch.Generator().manual_seed(6)
    for shape, layout, dtype in [((4, 3), "contiguous", torch.float32), ((2, 5, 3, 4), "channels_last", torch.float32),
                                 ((2, 3, 7), "strided", torch.float64), ((3, 4, 2, 3), "contiguous", torch.bfloat16),
                                 ((2, 3, 2, 2, 3), "channels_last", torch.float16)]:
        x = make_input(shape, dtype, device, layout, gen)
        pd = torch.float64 if dtype == torch.float64 else torch.float32
        C = shape[1]
        w = (torch.rand(C, dtype=pd, generator=gen) + 0.5).to(device)
        b = torch.randn(C, dtype=pd, generator=gen).to(device)
        yield x, w, b, pd, gen


def _requiring_grad(*tensors):
    return tuple(t.detach().clone().requires_grad_() for t in tensors)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_all_ops(device):
    ops = torch.ops.fusedopt
    for x, w, b, pd, gen in op_samples(device):
        mean, var = ops.batch_norm_stats(x)
        dy = torch.randn(x.shape, generator=gen).to(x.dtype).to(device)
        sdy, sdxm = ops.batch_norm_backward_reduce(dy, x, mean)
        count = x.numel() // x.shape[1]
        torch.library.opcheck(ops.batch_norm_stats.default, (x,))
        torch.library.opcheck(ops.batch_norm_elemt.default, (x, w, b, mean, var, 1e-5))
        torch.library.opcheck(ops.batch_norm_elemt.default, (x, None, None, mean, var, 1e-5))
        # with inputs that require grad: the Autograd registration and the compiled backward are checked too
        torch.library.opcheck(ops.batch_norm_elemt.default, (*_requiring_grad(x, w, b), mean, var, 1e-5))
        torch.library.opcheck(ops.batch_norm_backward_reduce.default, (dy, x, mean))
        torch.library.opcheck(ops.batch_norm_backward_elemt.default, (dy, x, w, mean, var, sdy, sdxm, count, 1e-5))
        torch.library.opcheck(ops.batch_norm_backward_elemt.default, (dy, x, None, mean, var, sdy, sdxm, count, 1e-5))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_train_ops(device):
    ops = torch.ops.fusedopt
    for x, w, b, pd, gen in op_samples(device):
        out, mean, var = ops.batch_norm_train(x, w, b, 1e-5)
        dy = torch.randn(x.shape, generator=gen).to(x.dtype).to(device)
        torch.library.opcheck(ops.batch_norm_train.default, (x, w, b, 1e-5))
        torch.library.opcheck(ops.batch_norm_train.default, (*_requiring_grad(x, w, b), 1e-5))
        torch.library.opcheck(ops.batch_norm_train.default, (x, None, None, 1e-5))
        torch.library.opcheck(ops.batch_norm_train_backward.default, (dy, x, w, mean, var, 1e-5))
        torch.library.opcheck(ops.batch_norm_train_backward.default, (dy, x, None, mean, var, 1e-5))


# ---- the running-statistics update (fusedopt::batch_norm_update_running_stats_) ---------------------

def _running_update_reference(running, batch, momentum, count, is_var):
    """torch's rule in float64, rounded once to the buffer's dtype."""
    b = batch.double()
    if is_var and count > 1:
        b = b * (count / (count - 1))
    return (momentum * b + (1 - momentum) * running.double()).to(running.dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stat_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("buffer_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("count", [0, 1, 2, 37])
def test_update_running_stats(device, stat_dtype, buffer_dtype, count):
    """Against the rule in float64, rounded once to the buffer's dtype: the op's math is float32 (float64
    when the buffer or the statistics are float64). A strided buffer is updated through its stride;
    either buffer may be absent."""
    gen = torch.Generator().manual_seed(count)
    C = 19
    mean = torch.randn(C, generator=gen, dtype=torch.float64).to(stat_dtype).to(device)
    var = (torch.rand(C, generator=gen, dtype=torch.float64) + 0.1).to(stat_dtype).to(device)
    backing = torch.randn(2 * C, generator=gen, dtype=torch.float64).to(buffer_dtype).to(device)
    rm = backing[::2]  # strided
    rv = (torch.rand(C, generator=gen, dtype=torch.float64) + 0.5).to(buffer_dtype).to(device)
    want_m = _running_update_reference(rm, mean, 0.1, count, False)
    want_v = _running_update_reference(rv, var, 0.1, count, True)
    odd = backing[1::2].clone()
    torch.ops.fusedopt.batch_norm_update_running_stats_(rm, rv, mean, var, count, 0.1)
    tol = TOL[buffer_dtype]  # float32 buffers: float32 math (or float64 with float64 statistics), one rounding
    torch.testing.assert_close(rm, want_m, **tol)
    torch.testing.assert_close(rv, want_v, **tol)
    assert torch.equal(backing[1::2], odd)  # the gaps of the strided buffer
    # Absent buffers: the other is still updated.
    rv2 = rv.clone()
    torch.ops.fusedopt.batch_norm_update_running_stats_(None, rv2, mean, var, count, 0.5)
    torch.testing.assert_close(rv2, _running_update_reference(rv, var, 0.5, count, True), **tol)
    torch.ops.fusedopt.batch_norm_update_running_stats_(None, None, mean, var, count, 0.5)


def test_update_running_stats_opcheck_and_errors():
    op = torch.ops.fusedopt.batch_norm_update_running_stats_
    mean, var = torch.randn(5), torch.rand(5)
    for rm, rv in [(torch.zeros(5), torch.ones(5)), (None, torch.ones(5, dtype=torch.bfloat16)),
                   (torch.zeros(5, dtype=torch.float64), None)]:
        torch.library.opcheck(op.default, (rm, rv, mean, var, 12, 0.1))
    torch.library.opcheck(op.default, (torch.zeros(3), torch.ones(3), torch.randn(3).double(), torch.rand(3).double(), 4, 0.3))
    rm, rv = torch.zeros(5), torch.ones(5)
    bad = [
        ((torch.zeros(4), rv, mean, var, 3, 0.1), "running_mean must be a dense 1-d tensor of 5 values"),
        ((rm, torch.ones(5, dtype=torch.int64), mean, var, 3, 0.1), "running_var must be float32, float64"),
        ((rm, rv, mean, var[:4], 3, 0.1), "var must be like mean"),
        ((rm, rv, mean.half(), var.half(), 3, 0.1), "mean must be float32 or float64"),
        ((rm, rv, mean, var, -1, 0.1), "count must be >= 0"),
        ((rm, rm, mean, var, 3, 0.1), "must be different tensors"),
        ((rm, torch.ones(1).expand(5), mean, var, 3, 0.1), "running_var must hold one value per channel"),
    ]
    for args, message in bad:
        before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args[:2]]
        with pytest.raises(RuntimeError, match=message):
            op(*args)
        assert all(torch.equal(a, b) for a, b in zip(args[:2], before) if a is not None)
    # No channels: nothing to update, and two empty buffers (which may share no memory at all) are fine.
    empty = torch.empty(0)
    op(torch.empty(0), torch.empty(0), empty, empty, 3, 0.1)
    op(empty[:0], empty[:0].clone(), empty, empty, 3, 0.1)


# Channel counts on both sides of the CPU's per-channel fusion threshold (4 channels per thread), odd
# spatial sizes (vector tails), N = 1, empty batches, every layout and dtype.
TRAIN_SHAPES = [(8, 64, 7, 9), (3, 40, 5), (1, 33, 3, 5), (5, 3, 4, 4), (2, 9, 3, 2, 5), (16, 17), (0, 12, 3, 3),
                (4, 12, 1, 1), (260, 9, 5)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", TRAIN_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "offset"])
@pytest.mark.parametrize("affine", [True, False])
def test_train_ops_equal_the_split_ops(device, shape, dtype, layout, affine):
    """batch_norm_train(_backward) give bit for bit what the four split ops give (the CPU fuses the two
    passes per channel for NCHW inputs with enough channels; the arithmetic is the same)."""
    if layout == "channels_last" and len(shape) not in (4, 5):
        layout = "contiguous"
    ops = torch.ops.fusedopt
    gen = torch.Generator().manual_seed(sum(shape) + len(shape))
    x = make_input(shape, dtype, device, layout, gen, scale=3.0, shift=2.0)
    pd = torch.float64 if dtype == torch.float64 else torch.float32
    C = shape[1]
    w = (torch.rand(C, dtype=pd, generator=gen) + 0.5).to(device) if affine else None
    b = torch.randn(C, dtype=pd, generator=gen).to(device) if affine else None
    dy = make_input(shape, dtype, device, layout, gen)
    out, mean, var = ops.batch_norm_train(x, w, b, 1e-5)
    mean_s, var_s = ops.batch_norm_stats(x)
    out_s = ops.batch_norm_elemt(x, w, b, mean_s, var_s, 1e-5)
    assert torch.equal(mean.nan_to_num(7.0), mean_s.nan_to_num(7.0))
    assert torch.equal(var.nan_to_num(7.0), var_s.nan_to_num(7.0))
    assert torch.equal(out, out_s) and out.stride() == out_s.stride()
    gi, sdy, sdxm = ops.batch_norm_train_backward(dy, x, w, mean, var, 1e-5)
    sdy_s, sdxm_s = ops.batch_norm_backward_reduce(dy, x, mean)
    gi_s = ops.batch_norm_backward_elemt(dy, x, w, mean, var, sdy_s, sdxm_s, max(1, x.numel() // C), 1e-5)
    assert torch.equal(sdy, sdy_s) and torch.equal(sdxm, sdxm_s)
    assert torch.equal(gi, gi_s) and gi.stride() == gi_s.stride()
    if x.numel():  # and both against float64 formulas
        dims = [0] + list(range(2, x.dim()))
        view = [1, -1] + [1] * (x.dim() - 2)
        x64, dy64 = x.double(), dy.double()
        var64, mean64 = torch.var_mean(x64, dim=dims, unbiased=False)
        tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mean.double(), mean64, **tol)
        torch.testing.assert_close(var.double(), var64, **tol)
        torch.testing.assert_close(sdy.double(), dy64.sum(dims), **tol)
        torch.testing.assert_close(sdxm.double(), (dy64 * (x64 - mean.double().view(view))).sum(dims), **tol)


def test_train_ops_reject_bad_input_naming_the_argument():
    ops = torch.ops.fusedopt
    x = torch.randn(4, 16, 3, 3)
    with pytest.raises(RuntimeError, match="batch_norm_train.*weight"):
        ops.batch_norm_train(x, torch.ones(15), None, 1e-5)
    mean, var = ops.batch_norm_stats(x)
    with pytest.raises(RuntimeError, match="batch_norm_train_backward.*grad_output"):
        ops.batch_norm_train_backward(torch.randn(4, 16, 3), x, None, mean, var, 1e-5)
    with pytest.raises(RuntimeError, match="batch_norm_train_backward.*var"):
        ops.batch_norm_train_backward(torch.randn_like(x), x, None, mean, var[:3], 1e-5)


def test_ops_against_float64_formulas():
    """Each op on its own against its defining formula in float64."""
    ops = torch.ops.fusedopt
    for x, w, b, pd, gen in op_samples():
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        x64 = x.double()
        var64, mean64 = torch.var_mean(x64, dim=dims, unbiased=False)
        mean, var = ops.batch_norm_stats(x)
        assert mean.dtype == pd and var.dtype == pd
        # sums of a few hundred values: float32 to ~1e-6 relative, float64 to rounding
        tol = dict(rtol=1e-5, atol=1e-6) if pd == torch.float32 else dict(rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(mean.double(), mean64, **tol)
        torch.testing.assert_close(var.double(), var64, **tol)
        out = ops.batch_norm_elemt(x, w, b, mean, var, 1e-3)
        m, v = mean.double().view(shape), var.double().view(shape)
        exp = (x64 - m) / torch.sqrt(v + 1e-3) * w.double().view(shape) + b.double().view(shape)
        assert_close(out, exp, x.dtype if x.dtype != torch.float64 else torch.float64)
        dy = torch.randn(x.shape, generator=gen).to(x.dtype)
        sdy, sdxm = ops.batch_norm_backward_reduce(dy, x, mean)
        tol = dict(rtol=1e-5, atol=1e-5) if pd == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sdy.double(), dy.double().sum(dims), **tol)
        torch.testing.assert_close(sdxm.double(), (dy.double() * (x64 - m)).sum(dims), **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    x = torch.empty(0, 3, 4, 4, device=device)
    mean, var = torch.ops.fusedopt.batch_norm_stats(x)
    assert mean.isnan().all() and var.isnan().all()
    m = fnn.BatchNorm2d(3).to(device).eval()
    assert m(x).shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_on_an_empty_batch_is_torchs(momentum, device):
    """torch skips an empty batch's statistics: running stats unchanged (they became NaN here), an empty
    output, zero grads (not None) for weight and bias; num_batches_tracked still counts the call."""
    outs = []
    for cls, F in ((fnn.BatchNorm2d, fnn.functional), (torch.nn.BatchNorm2d, torch.nn.functional)):
        m = cls(3, momentum=momentum).to(device)
        x = torch.empty(0, 3, 4, 4, device=device, requires_grad=True)
        y = m(x)
        y.sum().backward()
        rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)
        F.batch_norm(torch.empty(0, 3, device=device), rm, rv, training=True)
        outs.append((y.shape, m.running_mean, m.running_var, m.num_batches_tracked, m.weight.grad, m.bias.grad, rm, rv))
    ours, theirs = outs
    assert ours[0] == theirs[0]
    for a, b in zip(ours[1:], theirs[1:]):
        assert torch.equal(a, b)


def test_eps_and_running_buffer_errors_are_torchs_before_anything_changes():
    x = torch.randn(4, 3)
    for kwargs, training, message in [(dict(eps=0.0), True, "eps must be positive during training"),
                                      (dict(eps=-1e-3), False, "eps must be non-negative")]:
        for cls in (fnn.BatchNorm1d, fnn.SyncBatchNorm, torch.nn.BatchNorm1d):
            m = cls(3, **kwargs).train(training)
            before = copy.deepcopy(m.state_dict())
            with pytest.raises(ValueError, match=message):
                m(x)
            if cls is not torch.nn.BatchNorm1d:  # (torch counts the batch first)
                for k, v in m.state_dict().items():
                    assert torch.equal(v, before[k]), k
        for F in (fnn.functional, torch.nn.functional):
            with pytest.raises(ValueError, match=message):
                F.batch_norm(x, torch.zeros(3), torch.ones(3), training=training, **kwargs)
    for F in (fnn.functional, torch.nn.functional):
        for rm, rv in ((torch.zeros(3), None), (None, torch.ones(3))):
            with pytest.raises(ValueError, match="must either both be None or neither"):
                F.batch_norm(x, rm, rv, training=True)
    m = fnn.BatchNorm1d(3)
    m.running_var = None
    with pytest.raises(ValueError, match="must either both be None or neither"):
        m(x)
    assert m.num_batches_tracked == 0


def test_errors():
    m = fnn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="expected 4D input"):
        m(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        fnn.BatchNorm1d(3)(torch.randn(2, 3, 4, 5))
    # One value per channel in training: raised before the running statistics or the batch count change.
    m1 = fnn.BatchNorm1d(3)
    before = copy.deepcopy(m1.state_dict())
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        m1(torch.randn(1, 3))
    for k, v in m1.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        fnn.BatchNorm2d(3)(torch.randn(1, 3, 1, 1))
    fnn.BatchNorm2d(3).eval()(torch.randn(1, 3, 1, 1))  # fine in eval
    with pytest.raises(RuntimeError, match="running_mean and running_var must be defined"):
        fnn.functional.batch_norm(torch.randn(4, 3), None, None, training=False)
    ops = torch.ops.fusedopt
    x = torch.randn(4, 3, 2)
    mean, var = ops.batch_norm_stats(x)
    with pytest.raises(RuntimeError, match=r"weight must have shape \[3\]"):
        ops.batch_norm_elemt(x, torch.ones(4), None, mean, var, 1e-5)
    with pytest.raises(RuntimeError, match="var must be Float"):
        ops.batch_norm_elemt(x, None, None, mean, var.double(), 1e-5)
    with pytest.raises(RuntimeError, match="input must be float32, float64, float16 or bfloat16"):
        ops.batch_norm_stats(torch.ones(4, 3, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        ops.batch_norm_stats(torch.ones(4))
    with pytest.raises(RuntimeError, match="grad_output must have the input's shape"):
        ops.batch_norm_backward_reduce(torch.ones(4, 3), x, mean)
    with pytest.raises(RuntimeError, match="grad_output must have the input's dtype"):
        ops.batch_norm_backward_reduce(x.double(), x, mean)


def test_state_dict_and_signature_match_torch():
    for cls in (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d):
        for kwargs in (dict(), dict(affine=False), dict(track_running_stats=False), dict(momentum=None)):
            ref, ours = cls(5, **kwargs), FUSED[cls](5, **kwargs)
            assert list(ref.state_dict()) == list(ours.state_dict())
            assert repr(ref).replace(cls.__name__, "") == repr(ours).replace(cls.__name__, "")
            assert isinstance(ours, cls)
            ours.load_state_dict(ref.state_dict())


def test_half_module_parameters():
    """A module converted to bfloat16 (weights and buffers too) works: weights enter the kernels as
    float32, and running stats are written back in their own dtype."""
    gen = torch.Generator().manual_seed(7)
    ref, ours = make_pair((4, 6, 3, 3), torch.float32, "cpu", gen)
    ref.bfloat16()
    ours.bfloat16()
    x = make_input((4, 6, 3, 3), torch.bfloat16, "cpu", "contiguous", gen)
    assert_close(ours(x), ref(x), torch.bfloat16)
    assert ours.running_mean.dtype == torch.bfloat16
    torch.testing.assert_close(ours.running_mean.float(), ref.running_mean.float(), rtol=1e-2, atol=1e-2)


def test_convert_modules():
    gen = torch.Generator().manual_seed(8)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5), torch.nn.BatchNorm1d(5, momentum=None)))
    model[3][2].eval()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5, generator=gen)
    reference = copy.deepcopy(model)
    params = {n: p for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    out = fnn.convert_modules(model)
    assert out is model
    assert type(model[1]) is fnn.BatchNorm2d and type(model[3][2]) is fnn.BatchNorm1d
    assert model[1].training and not model[3][2].training
    assert all(p is params[n] for n, p in model.named_parameters())
    assert all(b is buffers[n] for n, b in model.named_buffers())
    x = torch.randn(6, 3, 8, 8, generator=gen)
    assert_close(model(x), reference(x), torch.float32)
    assert_close(model[1].running_var, reference[1].running_var, torch.float32)
    # A lone module converts too; a subclass of a mapped type is left alone.
    bn = fnn.convert_modules(torch.nn.BatchNorm3d(2))
    assert type(bn) is fnn.BatchNorm3d

    class MyBN(torch.nn.BatchNorm2d):
        pass

    assert type(fnn.convert_modules(MyBN(2))) is MyBN
    assert torch.nn.BatchNorm2d in fnn.MODULE_MAP


def test_sync_batchnorm_without_process_group_is_batchnorm():
    gen = torch.Generator().manual_seed(9)
    ref = torch.nn.BatchNorm2d(4)
    sync = fnn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(copy.deepcopy(ref)))
    assert type(sync[0]) is fnn.SyncBatchNorm
    x = torch.randn(3, 4, 5, 5, generator=gen)
    assert_close(sync(x), ref(x), torch.float32)
    assert_close(sync[0].running_var, ref.running_var, torch.float32)
    # As torch's, an existing SyncBatchNorm is rebuilt with the process group it is given.
    group = object()  # only stored: without torch.distributed initialised no collective runs
    rebuilt = fnn.SyncBatchNorm.convert_sync_batchnorm(sync, process_group=group)
    assert rebuilt[0].process_group is group
    assert rebuilt[0].weight is sync[0].weight and rebuilt[0].running_var is sync[0].running_var
    ref_rebuilt = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.SyncBatchNorm(4), process_group=group)
    assert ref_rebuilt.process_group is group


def test_sync_batchnorm_checks_batch_size_before_eps_as_torch():
    for cls in (torch.nn.SyncBatchNorm, fnn.SyncBatchNorm):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            cls(3, eps=0)(torch.randn(1, 3))


def _sliced_channels_last(shape, part, gen):
    """A channels-last(_3d) tensor of `shape` that is not dense: every other element along dim `part`
    of one twice as long there."""
    big = list(shape)
    big[part] *= 2
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    index = [slice(None)] * len(shape)
    index[part] = slice(None, None, 2)
    return torch.randn(big, generator=gen).contiguous(memory_format=fmt)[tuple(index)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,part", [((4, 3, 4, 5), 0), ((2, 6, 3, 4), 1), ((3, 3, 4, 2), 2),
                                        ((2, 3, 2, 3, 4), 0), ((2, 3, 2, 3, 4), 4)], ids=str)
def test_sliced_channels_last_input_keeps_torchs_layout(shape, part, training, device):
    """A slice of a channels-last input is neither contiguous nor channels-last-contiguous; torch keeps
    its suggested format (channels-last) for the output, and so do we (we made it contiguous)."""
    gen = torch.Generator().manual_seed(11)
    x = _sliced_channels_last(shape, part, gen).to(device)
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    ref, ours = make_pair(shape, torch.float32, device, gen)
    ref.train(training)
    ours.train(training)
    out = run_train_step(ref, ours, x, torch.float32, gen)
    expected = ref(x)
    assert out.stride() == expected.stride()
    # The fake (torch.compile's view of the op) says the same.
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
        op = torch.ops.fusedopt.batch_norm_train if training else torch.ops.fusedopt.batch_norm_elemt
        args = (fake, None, None, 1e-5) if training else (fake, None, None, torch.zeros(shape[1]),
                                                          torch.ones(shape[1]), 1e-5)
        fake_out = op(*args)
        fake_out = fake_out[0] if training else fake_out
    assert fake_out.stride() == out.stride()


@pytest.mark.parametrize("device", DEVICES)
def test_empty_input_in_eval_is_torchs(device):
    """torch returns input.clone() (times weight[0], plus bias[0]) for an empty input before it looks at
    the other arguments' sizes, in eval as in training."""
    cases = [
        (lambda: torch.nn.BatchNorm2d(3), torch.randn(0, 3, 5, 5).to(memory_format=torch.channels_last)),
        (lambda: torch.nn.BatchNorm2d(0, affine=False), torch.randn(2, 0, 3, 3)),
    ]
    for make, x in cases:
        ref = make().to(device).eval()
        ours = FUSED[type(ref)](ref.num_features, affine=ref.affine).to(device).eval()
        x = x.to(device)
        out, expected = ours(x), ref(x)
        assert out.shape == expected.shape and out.stride() == expected.stride()
    # functional, with running stats of the wrong size (torch never looks at them for an empty input)
    x = torch.randn(0, 3, 3, device=device)
    stats = torch.zeros(5, device=device), torch.ones(5, device=device)
    assert fnn.functional.batch_norm(x, *stats).shape == torch.nn.functional.batch_norm(x, *stats).shape


def test_training_argument_type_is_torchs():
    x = torch.randn(3, 2)
    for training in (1, 0.0, None):
        with pytest.raises(TypeError) as ours:
            fnn.functional.batch_norm(x, None, None, training=training)
        with pytest.raises(TypeError) as ref:
            torch.nn.functional.batch_norm(x, None, None, training=training)
        assert str(ours.value) == str(ref.value)


def test_functional_batch_norm_takes_torch_function():
    """Tensor subclasses and TorchFunctionModes see one batch_norm call, as with torch's."""
    from torch.overrides import TorchFunctionMode

    class Record(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls.append(func)
            return func(*args, **(kwargs or {}))

    x = torch.randn(4, 3)
    with Record() as mode:
        fnn.functional.batch_norm(x, None, None, training=True)
    assert mode.calls[0] is fnn.functional.batch_norm

    class Sub(torch.Tensor):
        pass

    assert type(fnn.functional.batch_norm(x.as_subclass(Sub), None, None, training=True)) is Sub


def test_fx_traces_the_modules_as_leaves():
    """torch.fx.symbolic_trace keeps torch.nn's BatchNorm and Dropout as leaves; ours are one node each
    too, so the traced graph follows train()/eval() afterwards, as the module does."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), fnn.BatchNorm2d(4), fnn.Dropout(0.5),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 9, 6), fnn.BatchNorm1d(6))
    reference = copy.deepcopy(model)
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(5, 3, 3, 3)
    for training in (True, False):
        traced.train(training)
        reference.train(training)
        torch.manual_seed(1)
        out = traced(x)
        torch.manual_seed(1)
        assert torch.equal(out, reference(x))
    assert torch.equal(traced.get_submodule("1").running_mean, reference[1].running_mean)
    sync = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 3), fnn.SyncBatchNorm(3)))
    torch.testing.assert_close(sync(torch.ones(4, 3) * torch.arange(4.0).view(4, 1)).mean(0), torch.zeros(3),
                               atol=1e-6, rtol=0)


def test_forward_ad_and_torch_func_are_torchs():
    """Our autograd is a C++ autograd Function, which has no forward-mode rule and cannot be transformed
    by torch.func: the functional (and so the modules) compute with torch's batch_norm then, and the
    op itself raises on an input with a tangent rather than dropping it."""
    import torch.autograd.forward_ad as fwAD

    gen = torch.Generator().manual_seed(12)
    x, t = torch.randn(5, 3, 4, generator=gen), torch.randn(5, 3, 4, generator=gen)
    w, b = torch.rand(3, generator=gen) + 0.5, torch.randn(3, generator=gen)
    for training in (True, False):
        stats = (torch.randn(3, generator=gen), torch.rand(3, generator=gen) + 0.5)

        def ours(x, w):
            return fnn.functional.batch_norm(x, *(s.clone() for s in stats), w, b, training=training)

        def ref(x, w):
            return torch.nn.functional.batch_norm(x, *(s.clone() for s in stats), w, b, training=training)

        tangent = torch.func.jvp(ours, (x, w), (t, torch.ones(3)))[1]
        assert tangent.abs().sum() > 0
        torch.testing.assert_close(tangent, torch.func.jvp(ref, (x, w), (t, torch.ones(3)))[1])
        torch.testing.assert_close(torch.func.grad(lambda x: ours(x, w).pow(2).sum())(x),
                                   torch.func.grad(lambda x: ref(x, w).pow(2).sum())(x))
        with fwAD.dual_level():
            dual = fwAD.make_dual(x, t)
            torch.testing.assert_close(fwAD.unpack_dual(ours(dual, w)).tangent, fwAD.unpack_dual(ref(dual, w)).tangent)
            with pytest.raises(NotImplementedError, match="batch_norm_train: forward-mode AD is not supported"):
                torch.ops.fusedopt.batch_norm_train(dual, None, None, 1e-5)
            with pytest.raises(NotImplementedError, match="batch_norm_elemt: forward-mode AD is not supported"):
                torch.ops.fusedopt.batch_norm_elemt(dual, None, None, *stats, 1e-5)
    # modules under torch.func (eval: functorch forbids the running-stats update of a captured buffer)
    ref_m, ours_m = make_pair((4, 3), torch.float32, "cpu", gen)
    ref_m.eval()
    ours_m.eval()
    x = torch.randn(4, 3, generator=gen)

    def loss(m):
        return lambda x: torch.func.functional_call(m, dict(m.named_parameters()), (x,)).pow(2).sum()

    torch.testing.assert_close(torch.func.grad(loss(ours_m))(x), torch.func.grad(loss(ref_m))(x))


def test_pieces_without_a_derivative_refuse_inputs_that_require_grad():
    """batch_norm_stats and the backward's pieces have no derivative: with an input that requires grad
    they raise (torch's autograd fallback only warned and left x.grad None), and under no_grad they
    run. batch_norm_elemt and the functional refuse running statistics that require grad, as torch."""
    ops = torch.ops.fusedopt
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(4, 3, 5, generator=gen)
    dy = torch.randn(4, 3, 5, generator=gen)
    mean, var = ops.batch_norm_stats(x)
    sum_dy, sum_dy_xmu = ops.batch_norm_backward_reduce(dy, x, mean)
    calls = {
        "batch_norm_stats": lambda x, dy: ops.batch_norm_stats(x),
        "batch_norm_backward_reduce": lambda x, dy: ops.batch_norm_backward_reduce(dy, x, mean),
        "batch_norm_backward_elemt": lambda x, dy: ops.batch_norm_backward_elemt(dy, x, None, mean, var, sum_dy,
                                                                                 sum_dy_xmu, 20, 1e-5),
        "batch_norm_train_backward": lambda x, dy: ops.batch_norm_train_backward(dy, x, None, mean, var, 1e-5),
    }
    for name, call in calls.items():
        for which in ("input", "grad_output"):
            if name == "batch_norm_stats" and which == "grad_output":
                continue
            args = (x.clone().requires_grad_(), dy) if which == "input" else (x, dy.clone().requires_grad_())
            with pytest.raises(RuntimeError, match=f"fusedopt::{name}: {which} requires grad, but this op has no "
                                                   "derivative"):
                call(*args)
            with torch.no_grad():
                call(*args)
    stats = (mean.clone().requires_grad_(), var)
    with pytest.raises(RuntimeError, match="batch_norm_elemt: mean and var are not differentiable"):
        ops.batch_norm_elemt(x, None, None, *stats, 1e-5)
    with torch.no_grad():
        ops.batch_norm_elemt(x, None, None, *stats, 1e-5)
    for training in (False, True):
        running = (torch.zeros(3, requires_grad=True), torch.ones(3))
        for fn in (torch.nn.functional.batch_norm, fnn.functional.batch_norm):
            with pytest.raises(RuntimeError, match="not differentiable with respect to argument 'running_mean'"):
                fn(x, *running, training=training)
        assert torch.equal(running[0], torch.zeros(3))


def test_wrong_channel_counts_are_torchs_errors():
    """A running stat, weight or bias of the wrong size: torch's RuntimeError and message, and the running
    statistics unchanged (the ops refuse before writing)."""
    x = torch.randn(4, 3, 5)
    good = dict(running_mean=torch.zeros(3), running_var=torch.ones(3), weight=torch.ones(3), bias=torch.zeros(3))
    for name in good:
        for training in (True, False):
            args = {k: v.clone() for k, v in good.items()}
            args[name] = torch.ones(4)
            messages = []
            for fn in (torch.nn.functional.batch_norm, fnn.functional.batch_norm):
                with pytest.raises(RuntimeError) as err:
                    fn(x, args["running_mean"], args["running_var"], args["weight"], args["bias"], training=training)
                messages.append(str(err.value))
                for k in ("running_mean", "running_var"):
                    if k != name:
                        assert torch.equal(args[k], good[k]), (name, k)
            assert messages[1] == messages[0] == f"{name} should contain 3 elements not 4"
    with pytest.raises(RuntimeError, match="^running_mean should contain 3 elements not 4$"):
        fnn.BatchNorm1d(4)(x)
    with pytest.raises(TypeError, match=r"^batch_norm\(\): argument 'momentum' \(position 7\) must be float, not "
                                        "NoneType$"):
        fnn.functional.batch_norm(x, None, None, training=True, momentum=None)
