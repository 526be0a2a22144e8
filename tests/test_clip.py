"""fusedopt.nn.utils clipping, torch.ops.fusedopt.total_norm / clip_by_total_norm_, and clipping folded
into fusedopt.optim.SGD, against torch.nn.utils.

Tolerances: the norm is compared with a float64 reference of the same elements; float32 accumulation
(every input but float64) keeps ~1e-6 relative error for sums over up to 1e6 elements (rtol 2e-5; p=0.5
and p=3 go through pow and the root 1/p amplifies: rtol 1e-4); float64 accumulation: rtol 1e-12. Clipped grads: one rounding of
the grad's dtype (TOL in conftest)."""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch

import fusedopt
from fusedopt.nn.utils import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm
from conftest import DEVICES, DTYPES, TOL, assert_close, make_tensor, param_zoo

INF = float("inf")
NORM_TYPES = [0.5, 1.0, 2.0, 3.0, INF]
ALL_NORM_TYPES = NORM_TYPES + [-INF, -1.5]
DTYPE_MIXES = {
    "f32": [torch.float32],
    "f64": [torch.float64],
    "f16": [torch.float16],
    "bf16": [torch.bfloat16],
    "f32+f16+bf16": [torch.float32, torch.float16, torch.bfloat16],
    "all": DTYPES,
}


def _reference_norm(tensors, p):
    """The norm of the concatenation, in float64."""
    flat = torch.cat([t.detach().double().reshape(-1).cpu() for t in tensors]) if tensors else torch.zeros(0)
    return torch.linalg.vector_norm(flat, p)


def _norm_tol(tensors, p):
    """Tolerance of a norm over tensors (or dtypes)."""
    if all(getattr(t, "dtype", t) == torch.float64 for t in tensors):
        return dict(rtol=1e-12, atol=0)
    # float32/half tensors are accumulated in float32 (then combined in float64 when mixed with float64).
    return dict(rtol=1e-4 if p not in (1.0, 2.0, INF, -INF) else 2e-5, atol=0)  # pow, and the root amplifies (1/p)


def _mixed_zoo(dtypes, device, seed):
    out = []
    for k, dtype in enumerate(dtypes):
        out += param_zoo(dtype, device, seed + k)
    random.Random(seed).shuffle(out)
    return out


def _result_dtype(tensors):
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mix", list(DTYPE_MIXES))
@pytest.mark.parametrize("p", ALL_NORM_TYPES)
def test_total_norm_op(device, mix, p):
    tensors = _mixed_zoo(DTYPE_MIXES[mix], device, seed=len(mix))
    tensors = [t for t in tensors if t.numel()] if p == -INF else tensors  # min over nothing is undefined
    out = torch.ops.fusedopt.total_norm(tensors, p)
    assert out.shape == () and out.dtype == _result_dtype(tensors) and out.device == tensors[0].device
    torch.testing.assert_close(out.double().cpu(), _reference_norm(tensors, p), **_norm_tol(tensors, p))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mix", list(DTYPE_MIXES))
@pytest.mark.parametrize("p", NORM_TYPES)
def test_get_total_norm_matches_torch(device, mix, p):
    tensors = _mixed_zoo(DTYPE_MIXES[mix], device, seed=7)
    if p == INF:
        # torch raises for the inf-norm of a list holding an empty tensor, and so do we
        # (test_norms_without_identity_refuse_empty_tensors); the op takes the max over the elements
        # there are (test_total_norm_op).
        tensors = [t for t in tensors if t.numel()]
    ours = get_total_norm(tensors, p)
    theirs = torch.nn.utils.get_total_norm(tensors, p)
    # Same dtype as torch, except that all-half inputs give a float32 norm (torch: float16/bfloat16).
    assert ours.dtype == (theirs.dtype if theirs.dtype in (torch.float32, torch.float64) else torch.float32)
    # torch computes each float16/bfloat16 tensor's norm in float32 and rounds it to the half type
    # (inf beyond float16's range, see test_float16_norm_beyond_range); we keep float32: compare with
    # torch on float32 copies of the half tensors.
    upcast = [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors]
    theirs = torch.nn.utils.get_total_norm(upcast, p)
    torch.testing.assert_close(ours.double(), theirs.double(), **_norm_tol(tensors, p))


def test_norm_type_zero_follows_torch():
    # torch takes the 0-"norm" of the per-tensor nonzero counts: the number of tensors with a nonzero.
    tensors = [torch.ones(3), torch.zeros(4), torch.tensor([0.0, float("nan")]), torch.zeros(0),
               torch.tensor([0.0, 2.0], dtype=torch.float16)]
    assert get_total_norm(tensors, 0).item() == torch.nn.utils.get_total_norm(tensors, 0).item() == 3
    # The op itself counts nonzero elements (NaN counts, as in torch.linalg.vector_norm).
    assert torch.ops.fusedopt.total_norm(tensors, 0.0).item() == 5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("count", [1, 2, 2000])
@pytest.mark.parametrize("p", NORM_TYPES)
def test_tensor_counts(device, count, p):
    g = torch.Generator().manual_seed(count)
    low = 1 if p == INF else 0  # torch raises for the inf-norm of an empty tensor
    tensors = [torch.randn(int(torch.randint(low, 300, (1,), generator=g)), generator=g).to(device)
               for _ in range(count)]
    ours, theirs = get_total_norm(tensors, p), torch.nn.utils.get_total_norm(tensors, p)
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=0)


def test_norm_type_zero_counts_tensors_also_for_one_tensor():
    """torch's 0-"norm" is the number of tensors with a nonzero element; for a single tensor this gave
    its number of nonzero elements (and clipped by it)."""
    for tensors in ([torch.tensor([1.0, 2.0, 3.0, 0.0, 5.0])], [torch.zeros(3), torch.tensor([0.0, 2.0])],
                    [torch.tensor([1.0, 2.0]), torch.empty(0), torch.tensor([3.0])], [torch.zeros(4)]):
        torch.testing.assert_close(get_total_norm(tensors, 0), torch.nn.utils.get_total_norm(tensors, 0))
    ours, theirs = torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(5))
    ours.grad, theirs.grad = torch.tensor([1.0, 2.0, 3.0, 0.0, 5.0]), torch.tensor([1.0, 2.0, 3.0, 0.0, 5.0])
    torch.testing.assert_close(clip_grad_norm_(ours, 0.5, 0), torch.nn.utils.clip_grad_norm_(theirs, 0.5, 0))
    torch.testing.assert_close(ours.grad, theirs.grad)


def test_empty_inputs():
    assert torch.equal(get_total_norm([]), torch.tensor(0.0))
    assert torch.equal(clip_grad_norm_([], 1.0), torch.nn.utils.clip_grad_norm_([], 1.0))
    p = torch.nn.Parameter(torch.ones(3))  # no grad
    assert torch.equal(clip_grad_norm_([p], 1.0), torch.tensor(0.0))
    with pytest.warns(UserWarning, match="empty generator"):
        clip_grad_norm_((x for x in []), 1.0)
    # Only empty tensors: norm 0.
    assert get_total_norm([torch.zeros(0), torch.zeros(0, 3)]).item() == 0.0
    with pytest.raises(RuntimeError, match="no tensor arguments"):
        torch.ops.fusedopt.total_norm([], 2.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_element_counted_once(device, dtype):
    # A segment is read as four quarters, then whole vectors, then a scalar tail (norm_kernel.cpp);
    # small integers (exact in every dtype, their sums exact in float32), so a skipped or twice-read
    # element changes the 1-norm.
    # Lengths cover every split for vectors of up to 64 elements; the storage offset makes the start
    # unaligned; a second tensor after it catches reads that run past the end.
    for n in list(range(0, 300)) + [511, 512, 513, 1000, 4097, 65535, 65536, 65537, 70001]:
        base = torch.arange(1, n + 2, device=device).remainder(101).to(dtype)
        x = base[1:]  # storage offset 1
        tensors = [x, torch.full((3,), 1000.0, dtype=dtype, device=device)]
        expected = float(x.double().sum().item()) + 3000.0
        assert torch.ops.fusedopt.total_norm(tensors, 1.0).item() == expected, n
        expected_max = float(x.double().abs().max().item()) if n else 0.0
        assert torch.ops.fusedopt.total_norm(tensors[:1], INF).item() == expected_max, n


@pytest.mark.parametrize("device", DEVICES)
def test_scale_writes_every_element_once(device):
    # The CPU scale walks each thread's slice backwards in blocks of 16,384 elements (multi_tensor_cpu.h):
    # lengths around the block size and the thread split, unaligned starts, float32 and float16.
    sizes = [1, 16383, 16384, 16385, 70001, 5, 333333, 32769]
    tensors = []
    for i, n in enumerate(sizes):
        base = torch.arange(n + 1, device=device).remainder(97).to(torch.float16 if i % 3 == 1 else torch.float32)
        tensors.append(base[1:])  # storage offset 1
    expected = [t * (1.0 / (2.0 + 1e-6)) for t in tensors]
    torch.ops.fusedopt.clip_by_total_norm_(tensors, torch.tensor(2.0, device=device), 1.0)
    for t, e, n in zip(tensors, expected, sizes):
        assert torch.equal(t, e), n


def test_deterministic_across_thread_counts():
    tensors = [torch.randn(n) for n in (1, 70001, 333333, 5, 262144)] + [torch.randn(99999).half()]
    threads = torch.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results[n] = [torch.ops.fusedopt.total_norm(tensors, p).item() for p in NORM_TYPES]
    finally:
        torch.set_num_threads(threads)
    assert results[1] == results[2] == results[3]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", ALL_NORM_TYPES)
@pytest.mark.parametrize("bad", [INF, -INF, math.nan, "inf+nan"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite(device, p, bad, dtype):
    tensors = [torch.randn(100, dtype=dtype, device=device), torch.randn(37, dtype=dtype, device=device)]
    if bad == "inf+nan":
        tensors[0][3], tensors[1][5] = INF, math.nan
    else:
        tensors[1][5] = bad
    ours = get_total_norm(tensors, p)
    theirs = torch.nn.utils.get_total_norm(tensors, p)
    assert (ours.isnan().item(), ours.isinf().item()) == (theirs.isnan().item(), theirs.isinf().item())
    if not theirs.isfinite():
        assert ours.item() == theirs.item() or (ours.isnan() and theirs.isnan())
    with pytest.raises(RuntimeError, match="non-finite") if not theirs.isfinite() else warnings.catch_warnings():
        get_total_norm(tensors, p, error_if_nonfinite=True)


def test_error_if_nonfinite_leaves_grads():
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.tensor([1.0, INF, 2.0, 3.0])
    before = p.grad.clone()
    with pytest.raises(RuntimeError, match="non-finite, so it cannot be clipped"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert torch.equal(p.grad, before)
    # Without the flag: grads scaled by clamp(1 / (inf + 1e-6)) = 0, like torch (inf * 0 = nan).
    q = torch.nn.Parameter(torch.ones(4))
    q.grad = before.clone()
    torch.nn.utils.clip_grad_norm_([q], 1.0)
    clip_grad_norm_([p], 1.0)
    torch.testing.assert_close(p.grad, q.grad, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_float16_norm_beyond_range(device):
    """fp16 grads whose norm exceeds 65504: torch's norm is inf (computed in float16) and clipping then
    zeroes every grad; ours is the correct float32 norm and the grads are scaled down properly."""
    grads = [torch.full((100,), 60000.0, dtype=torch.float16, device=device) for _ in range(3)]
    true_norm = 60000.0 * math.sqrt(300)
    theirs = torch.nn.utils.get_total_norm(grads, 2.0)
    assert theirs.dtype == torch.float16 and theirs.isinf()
    ours = get_total_norm(grads, 2.0)
    assert ours.dtype == torch.float32 and ours.isfinite()
    torch.testing.assert_close(ours.item(), true_norm, rtol=1e-6, atol=0)

    params_t = [torch.nn.Parameter(torch.zeros(100, dtype=torch.float16, device=device)) for _ in range(3)]
    params_o = [torch.nn.Parameter(torch.zeros(100, dtype=torch.float16, device=device)) for _ in range(3)]
    for pt, po, g in zip(params_t, params_o, grads):
        pt.grad, po.grad = g.clone(), g.clone()
    torch.nn.utils.clip_grad_norm_(params_t, 1.0)
    clip_grad_norm_(params_o, 1.0)
    assert all(torch.all(p.grad == 0) for p in params_t)  # torch: every grad zeroed
    expected = 60000.0 / true_norm
    for p in params_o:
        torch.testing.assert_close(p.grad.float(), torch.full((100,), expected, device=device), **TOL[torch.float16])


def _params_with_grads(dtype, device, seed, none_every=5, nonempty=False):
    ps, grads = [], param_zoo(dtype, device, seed)
    if nonempty:  # torch raises for the inf-norm of an empty tensor
        grads = [g for g in grads if g.numel()]
    for i, g in enumerate(grads):
        p = torch.nn.Parameter(torch.zeros_like(g))
        if i % none_every != 1:
            p.grad = g * 3
        ps.append(p)
    return ps


def _clone_params(params, dtype=None):
    """Copies of params with copies of their grads, converted to dtype when given."""
    out = []
    for q in params:
        c = torch.nn.Parameter(q.detach().to(dtype or q.dtype, copy=True))
        if q.grad is not None:
            c.grad = q.grad.to(dtype or q.grad.dtype, copy=True)
        out.append(c)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", NORM_TYPES)
@pytest.mark.parametrize("max_norm", [0.5, 1e30])
def test_clip_grad_norm_matches_torch(device, dtype, p, max_norm):
    ours = _params_with_grads(dtype, device, seed=3, nonempty=p == INF)
    theirs = _params_with_grads(dtype, device, seed=3, nonempty=p == INF)
    half = dtype in (torch.float16, torch.bfloat16)
    if half:
        # torch's half path rounds the norm to the half type (and overflows float16 for p <= 1 here):
        # the reference is torch on float32 copies, the grads then rounded to the half type.
        theirs = _clone_params(theirs, torch.float32)
    n_ours = clip_grad_norm_(ours, max_norm, p)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm, p)
    torch.testing.assert_close(n_ours.double(), n_theirs.double(), **_norm_tol([dtype], p))
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert_close(a.grad, b.grad.to(dtype), dtype)
            if max_norm == 1e30:
                assert torch.equal(a.grad, b.grad.to(dtype))  # coefficient 1: untouched values


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mix", ["f32", "f64", "f32+f16+bf16", "all"])
@pytest.mark.parametrize("p", NORM_TYPES + [-INF])
def test_clip_grad_norm_plain_path_is_the_general_path(device, mix, p):
    """clip_grad_norm_ runs plain params with dense grads on one device in C++ (_C.clip_grad_norm_plain,
    no per-param Python). It calls the same ops on the same grads as the general path (taken here with
    error_if_nonfinite=True, which reads the norm before clipping), so results agree to the bit."""
    from fusedopt import _C
    params = []
    for k, dtype in enumerate(DTYPE_MIXES[mix]):
        params += _params_with_grads(dtype, device, seed=20 + k, nonempty=p in (INF, -INF))
    random.Random(mix).shuffle(params)
    plain, general, direct = params, _clone_params(params), _clone_params(params)
    assert _C.clip_grad_norm_plain(direct, 0.5, p) is not None  # the case the C++ path takes
    n_plain = clip_grad_norm_(plain, 0.5, p)
    n_general = clip_grad_norm_(general, 0.5, p, error_if_nonfinite=True)
    assert n_plain.dtype == n_general.dtype and torch.equal(n_plain, n_general)
    for a, b in zip(plain, general):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad)


def test_clip_grad_norm_string_norm_type_takes_the_plain_path(monkeypatch):
    """norm_type as a string ("inf", as torch's docs allow through float()) runs the C++ path and gives
    what the number gives; it took the general path, ~2.4x the host time at 2,000 params."""
    from fusedopt.nn.utils import clip_grad as module
    real, orders = module._C, []

    class Recording:
        def __getattr__(self, name):
            return getattr(real, name)

        def clip_grad_norm_plain(self, params, max_norm, norm_type):
            orders.append(norm_type)
            return real.clip_grad_norm_plain(params, max_norm, norm_type)

    monkeypatch.setattr(module, "_C", Recording())
    for text, value in (("inf", INF), ("-inf", -INF), ("2", 2.0)):
        a = _params_with_grads(torch.float32, "cpu", seed=3, nonempty=True)
        b = _clone_params(a)
        assert torch.equal(clip_grad_norm_(a, 0.5, text), clip_grad_norm_(b, 0.5, value))
        for x, y in zip(a, b):
            assert (x.grad is None and y.grad is None) or torch.equal(x.grad, y.grad)
    assert orders == [INF, INF, -INF, -INF, 2.0, 2.0]
    with pytest.raises(ValueError):  # as torch's float(norm_type)
        clip_grad_norm_(_params_with_grads(torch.float32, "cpu", seed=3), 0.5, "two")


def test_clip_grad_norm_plain_path_declines_what_it_cannot_take():
    """_C.clip_grad_norm_plain returns None, modifying nothing, for lists the general path must take:
    anything but plain leaf Tensors/Parameters, grads with gaps, off CPU/CUDA or on two devices, no
    grads at all. clip_grad_norm_ then behaves as torch on them (a non-leaf warns as torch's does)."""
    from fusedopt import _C

    class MyParam(torch.nn.Parameter):
        pass

    def with_grad(p, g):
        p.grad = g
        return p

    cases = {
        "not a tensor": [with_grad(torch.nn.Parameter(torch.ones(3)), torch.ones(3)), 1.0],
        "subclass": [with_grad(MyParam(torch.ones(3)), torch.ones(3))],
        "non-leaf": [torch.ones(3, requires_grad=True) * 2],
        "grad with gaps": [with_grad(torch.nn.Parameter(torch.ones(4, 2)), torch.ones(4, 4)[:, ::2])],
        "meta grad": [with_grad(torch.nn.Parameter(torch.ones(3, device="meta")), torch.ones(3, device="meta"))],
        "no grads": [torch.nn.Parameter(torch.ones(3))],
    }
    for what, params in cases.items():
        with_grads = [q for q in params if isinstance(q, torch.Tensor) and q.is_leaf and q.grad is not None
                      and q.device.type == "cpu"]
        before = [q.grad.clone() for q in with_grads]
        assert _C.clip_grad_norm_plain(params, 1e-3, 2.0) is None, what
        assert all(torch.equal(q.grad, b) for q, b in zip(with_grads, before)), what
    # The general path: torch's results and errors.
    with pytest.raises(AttributeError):
        clip_grad_norm_(cases["not a tensor"], 1.0)
    q = cases["grad with gaps"][0]
    ref = with_grad(torch.nn.Parameter(torch.ones(4, 2)), q.grad.clone())
    torch.testing.assert_close(clip_grad_norm_([q], 1.0), torch.nn.utils.clip_grad_norm_([ref], 1.0))
    torch.testing.assert_close(q.grad, ref.grad)
    x = cases["non-leaf"][0]
    with pytest.warns(UserWarning, match="not a leaf"):
        torch.nn.utils.clip_grad_norm_([x], 1.0)
    with pytest.warns(UserWarning, match="not a leaf"):
        assert clip_grad_norm_([x], 1.0).item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grads_with_norm_exact(dtype):
    """Given the same total norm, the coefficient is torch's to the bit, and so are the grads."""
    ours = _params_with_grads(dtype, "cpu", seed=9)
    theirs = _params_with_grads(dtype, "cpu", seed=9)
    for norm in (torch.tensor(7.3), torch.tensor(7.3, dtype=torch.float64), torch.tensor(0.0)):
        clip_grads_with_norm_(ours, 2.5, norm)
        torch.nn.utils.clip_grads_with_norm_(theirs, 2.5, norm)
        for a, b in zip(ours, theirs):
            if a.grad is not None:
                assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [-1.0, -3.0, -1.5, 1.0, 2.0, 3.0, INF, -INF])
def test_negative_zeros(device, dtype, p):
    # |-0| is +0: pow(-0, -1) would be -inf, and -inf + inf a NaN where torch's norm is 0. Lengths put
    # the zeros in the vector loop and in the scalar tail (the only path of the CUDA kernel).
    for n in (2, 5, 130):
        x = torch.zeros(n, dtype=dtype, device=device)
        x[1::2] = -0.0
        y = x.clone()
        y[n // 2] = 2.0
        for t in (x, y):
            ours = torch.ops.fusedopt.total_norm([t], p)
            theirs = torch.linalg.vector_norm(t.double(), p)
            # a few exact values: float64 to rounding, others to float32's (the math type)
            torch.testing.assert_close(ours.double(), theirs, rtol=1e-6 if dtype != torch.float64 else 1e-14, atol=0)
            assert math.copysign(1.0, ours.item()) == 1.0, (n, p)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_norm_clips_cpu_grads():
    """A norm on the GPU, grads on the CPU: the coefficient must have arrived before the CPU kernel
    reads it (a non-blocking copy to the CPU returns before it has)."""
    for _ in range(5):
        ours = _params_with_grads(torch.float32, "cpu", seed=3)
        theirs = _clone_params(ours)
        # Queue work on the GPU first, so that an unsynchronised copy would still be pending.
        busy = torch.randn(4096, 4096, device="cuda")
        norm = (busy @ busy).sum() * 0 + 7.3
        clip_grads_with_norm_(ours, 2.5, norm)
        torch.nn.utils.clip_grads_with_norm_(theirs, 2.5, norm)
        for a, b in zip(ours, theirs):
            if a.grad is not None:
                assert torch.equal(a.grad, b.grad)


def test_single_tensor_and_non_dense_grads():
    p = torch.nn.Parameter(torch.zeros(6, 5))
    p.grad = torch.randn(5, 12)[:, ::2].t()  # a view with gaps
    q = torch.nn.Parameter(torch.zeros(6, 5))
    q.grad = p.grad.clone()
    n_ours = clip_grad_norm_(p, 0.1)
    n_theirs = torch.nn.utils.clip_grad_norm_(q, 0.1)
    torch.testing.assert_close(n_ours, n_theirs)
    torch.testing.assert_close(p.grad, q.grad)
    torch.testing.assert_close(get_total_norm(p.grad), torch.nn.utils.get_total_norm(p.grad))


def test_bad_input_as_torch():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    for bad, exc in (("a", ValueError), (None, TypeError)):
        with pytest.raises(exc):
            torch.nn.utils.clip_grad_norm_([p], bad)
        with pytest.raises(exc):
            clip_grad_norm_([p], bad)
    with pytest.raises(ValueError, match="could not convert string to float"):
        clip_grad_norm_([p], 1.0, "a")
    # torch accepts a negative max_norm (the coefficient is then negative) and negative norm types.
    for args in ((-1.0,), (1.0, -1.0), (1.0, -INF)):
        a, b = p.grad.clone(), p.grad.clone()
        pa, pb = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
        pa.grad, pb.grad = a, b
        torch.testing.assert_close(clip_grad_norm_([pa], *args), torch.nn.utils.clip_grad_norm_([pb], *args))
        torch.testing.assert_close(pa.grad, pb.grad)
    with pytest.raises(RuntimeError, match="dtype torch.int64"):  # torch: a RuntimeError too
        get_total_norm([torch.ones(3, dtype=torch.int64)])
    with pytest.raises(RuntimeError, match="norm_type is nan"):
        torch.ops.fusedopt.total_norm([torch.ones(3)], math.nan)
    with pytest.raises(RuntimeError, match="gaps"):
        torch.ops.fusedopt.total_norm([torch.ones(4, 4)[:, :2]], 2.0)
    with pytest.raises(RuntimeError, match="expected float32 or float64"):
        torch.ops.fusedopt.clip_by_total_norm_([torch.ones(3)], torch.tensor(1.0).half(), 1.0)
    # foreach is accepted either way.
    assert clip_grad_norm_([p], 10.0, foreach=True).item() == clip_grad_norm_([p], 10.0, foreach=False).item()


def test_shared_gradient_memory_is_rejected():
    """A grad listed twice (or overlapping another) is an error of clip_by_total_norm_, raised before
    any grad is written. torch's CPU clip_grad_norm_ scales such memory once per appearance (the
    coefficient squared, shown here) and its CUDA foreach path races; the fused kernel scales a list in
    parallel, so it refuses rather than race."""
    p = torch.nn.Parameter(torch.zeros(1 << 16))
    p.grad = torch.ones(1 << 16)
    q = torch.nn.Parameter(torch.zeros(1 << 16))
    q.grad = torch.ones(1 << 16)
    n = torch.nn.utils.clip_grad_norm_([q, q], 1.0)
    coef = 1.0 / (n.item() + 1e-6)
    torch.testing.assert_close(q.grad, torch.full_like(q.grad, coef * coef))  # torch: scaled twice
    for grads in ([p, p], "overlap"):
        if grads == "overlap":
            base = torch.ones(3000)
            a, b = torch.nn.Parameter(torch.zeros(2000)), torch.nn.Parameter(torch.zeros(2000))
            a.grad, b.grad = base[:2000], base[1000:]
            grads = [a, b]
        before = [g.grad.clone() for g in grads]
        with pytest.raises(RuntimeError, match=r"tensors\[0\] and tensors\[1\] share memory"):
            clip_grad_norm_(grads, 1e-3)
        with pytest.raises(RuntimeError, match="share memory"):
            clip_grad_norm_(grads, 1e-3, error_if_nonfinite=True)  # the general path: the same op
        assert all(torch.equal(g.grad, b0) for g, b0 in zip(grads, before))
    # Views of one buffer that do not overlap are fine.
    base = torch.ones(4000)
    a, b = torch.nn.Parameter(torch.zeros(2000)), torch.nn.Parameter(torch.zeros(2000))
    a.grad, b.grad = base[:2000], base[2000:]
    clip_grad_norm_([a, b], 1.0)
    torch.testing.assert_close(base, torch.full_like(base, 1.0 / (4000 ** 0.5 + 1e-6)))


def test_multi_device_shared_memory_check_agrees_with_the_op():
    """The multi-device path runs clip_by_total_norm_'s tensor checks on every device's grads before it
    scales any (_C.check_clip_tensors); its verdict and message are the op's, over duplicates,
    overlaps, touching and disjoint views, empty tensors and permuted (dense, non-contiguous) ones,
    and it writes nothing."""
    from fusedopt import _C
    base = torch.ones(5000)
    grid = torch.ones(6, 8)
    a, b = torch.ones(7), torch.ones(7)
    cases = [
        [a, b], [a, a], [b, a, b], [base[:2000], base[1000:]], [base[:2000], base[2000:4000]],
        [base[2000:4000], base[:2000], base[4000:]], [base[:0], base[:0], a], [base[10:10], base[:20]],
        [grid.t(), a], [grid.t(), grid[5:]], [grid[:3].t(), grid[3:].t()], [], [a],
    ]
    refusals = 0
    for tensors in cases:
        try:
            torch.ops.fusedopt.clip_by_total_norm_(tensors, torch.tensor(0.0), 1.0)  # coefficient 1: no write
            op_error = None
        except RuntimeError as e:
            op_error = str(e).splitlines()[0]
        before = [t.clone() for t in tensors]
        try:
            _C.check_clip_tensors(tensors)
            ours = None
        except RuntimeError as e:
            ours = str(e).splitlines()[0]
        assert ours == op_error, tensors
        assert all(torch.equal(t, b) for t, b in zip(tensors, before))
        refusals += op_error is not None
    assert refusals == 4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_multi_device_shared_memory_is_rejected_before_any_grad_is_scaled():
    """Grads on the CPU and on the GPU, one listed twice on the GPU: the GPU's op call would refuse
    it, but only after the CPU's grads had been scaled. Refused first; no grad changes."""
    cpu = torch.nn.Parameter(torch.zeros(100))
    cpu.grad = torch.ones(100)
    gpu = torch.nn.Parameter(torch.zeros(100, device="cuda"))
    gpu.grad = torch.ones(100, device="cuda")
    with pytest.raises(RuntimeError, match=r"tensors\[0\] and tensors\[1\] share memory"):
        clip_grads_with_norm_([cpu, gpu, gpu], 1.0, torch.tensor(1000.0))
    assert torch.equal(cpu.grad, torch.ones(100)) and torch.equal(gpu.grad.cpu(), torch.ones(100))
    clip_grads_with_norm_([cpu, gpu], 1.0, torch.tensor(1000.0))  # without the duplicate: both scaled
    assert torch.equal(gpu.grad.cpu(), cpu.grad) and cpu.grad[0].item() < 1e-2


def test_clip_grad_value():
    ours = _params_with_grads(torch.float32, "cpu", seed=2)
    theirs = _params_with_grads(torch.float32, "cpu", seed=2)
    clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for a, b in zip(ours, theirs):
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    tensors = [make_tensor((5, 3), torch.float32, device), make_tensor((7,), torch.float16, device, "offset"),
               make_tensor((), torch.bfloat16, device), make_tensor((0,), torch.float64, device)]
    for p in (2.0, INF, 1.0, 0.5):
        torch.library.opcheck(torch.ops.fusedopt.total_norm.default, (tensors, p))
    norm = torch.ops.fusedopt.total_norm(tensors, 2.0)
    torch.library.opcheck(torch.ops.fusedopt.clip_by_total_norm_.default,
                          ([t.clone() for t in tensors], norm, 0.5))


# ---- clipping folded into fusedopt.optim.SGD ---------------------------------------------------------


def _sgd_pair(dtype, device, seed, nonempty=False):
    ps = _params_with_grads(dtype, device, seed, none_every=7, nonempty=nonempty)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    for p, q in zip(ps, qs):
        if p.grad is not None:
            q.grad = p.grad.clone()
    return ps, qs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [2.0, 1.0, INF])
@pytest.mark.parametrize("max_norm", [0.3, 1e9])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_folded_clipping(device, dtype, p, max_norm, momentum):
    """SGD(max_grad_norm=...) against clip_grad_norm_ + torch.optim.SGD. The clip coefficient reaches
    the kernel folded into the grad-scale divisor, float64 for float64 grads: they agree to float64
    rounding (a float32 divisor would be off by ~1e-8)."""
    ours, theirs = _sgd_pair(dtype, device, seed=4, nonempty=p == INF)
    tol = TOL[dtype]
    opt = fusedopt.optim.SGD(ours, lr=0.1, momentum=momentum, max_grad_norm=max_norm, grad_norm_type=p)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=momentum)
    for step in range(3):
        if step:
            for a, b in zip(ours, theirs):
                if a.grad is not None:
                    g = torch.randn_like(a) * 2
                    a.grad.copy_(g)
                    b.grad.copy_(g)
        grads_before = [a.grad.clone() if a.grad is not None else None for a in ours]
        opt.step()
        n = torch.nn.utils.clip_grad_norm_(theirs, max_norm, p)
        ref.step()
        torch.testing.assert_close(opt.last_grad_norm.double(), n.double(), **_norm_tol([dtype], p))
        for a, b, g in zip(ours, theirs, grads_before):
            torch.testing.assert_close(a.detach().double(), b.detach().double(), **tol)
            if g is not None:  # the clipped grads are used, not stored
                assert torch.equal(a.grad, g)
    assert set(opt.state_dict()["param_groups"][0]) == set(ref.state_dict()["param_groups"][0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])  # torch: no fp16 unscale
def test_sgd_folded_clipping_with_grad_scaler(dtype):
    ours, theirs = _sgd_pair(dtype, "cpu", seed=5)
    opt = fusedopt.optim.SGD(ours, lr=0.1, momentum=0.9, max_grad_norm=0.5)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    s_ours = torch.amp.GradScaler("cpu", init_scale=1024.0)
    s_theirs = torch.amp.GradScaler("cpu", init_scale=1024.0)
    s_ours.scale(torch.ones(())), s_theirs.scale(torch.ones(()))  # creates the scale
    for step in range(3):
        for a, b in zip(ours, theirs):
            if a.grad is not None:
                g = torch.randn_like(a)
                a.grad.copy_(g * 1024)
                b.grad.copy_(g * 1024)
        s_ours.step(opt)
        s_ours.update()
        s_theirs.unscale_(ref)
        n = torch.nn.utils.clip_grad_norm_(theirs, 0.5)
        s_theirs.step(ref)
        s_theirs.update()
        tol = _norm_tol([dtype], 2.0) if dtype in (torch.float32, torch.float64) else TOL[dtype]
        torch.testing.assert_close(opt.last_grad_norm.double(), n.double(), **tol)
        for a, b in zip(ours, theirs):
            assert_close(a, b, dtype)
            if a.grad is not None:
                assert_close(a.grad, b.grad, dtype)


def test_sgd_folded_clipping_skipped_step():
    ours, _ = _sgd_pair(torch.float32, "cpu", seed=6)
    before = [p.detach().clone() for p in ours]
    grads_before = [p.grad.clone() if p.grad is not None else None for p in ours]
    opt = fusedopt.optim.SGD(ours, lr=0.1, max_grad_norm=1.0)
    next(p for p in ours if p.grad is not None and p.numel() > 1).grad.view(-1)[0] = INF
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(torch.ones(()))
    scaler.step(opt)
    assert all(torch.equal(a, b) for a, b in zip(ours, before))
    assert opt.last_grad_norm.isinf()


def test_sgd_clipping_options():
    ps = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match="max_grad_norm"):
        fusedopt.optim.SGD(ps, lr=0.1, max_grad_norm=-1.0)
    with pytest.raises(ValueError, match="could not convert"):
        fusedopt.optim.SGD(ps, lr=0.1, max_grad_norm=1.0, grad_norm_type="x")
    opt = fusedopt.optim.SGD(ps, lr=0.1)
    assert opt.max_grad_norm is None
    opt.step()  # no grads
    opt2 = fusedopt.optim.SGD(ps, lr=0.1, max_grad_norm=1.0)
    opt2.step()
    assert opt2.last_grad_norm.item() == 0.0


# ---- clipping folded into every other fusedopt optimizer ---------------------------------------------

FOLDED_OPTIMIZERS = {
    "Adam": (lambda ps, **kw: fusedopt.optim.Adam(ps, lr=0.01, amsgrad=True, **kw),
             lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True, foreach=False)),
    "AdamW": (lambda ps, **kw: fusedopt.optim.AdamW(ps, lr=0.01, weight_decay=0.1, **kw),
              lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, foreach=False)),
    "RMSprop": (lambda ps, **kw: fusedopt.optim.RMSprop(ps, lr=0.01, momentum=0.9, centered=True, **kw),
                lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.9, centered=True, foreach=False)),
    "Adagrad": (lambda ps, **kw: fusedopt.optim.Adagrad(ps, lr=0.1, lr_decay=0.01, **kw),
                lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.01, foreach=False)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(FOLDED_OPTIMIZERS))
@pytest.mark.parametrize("p", [2.0, INF, 0.0])
@pytest.mark.parametrize("grad_scaler", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_folded_clipping_every_optimizer(device, name, p, grad_scaler, dtype):
    """<Optimizer>(max_grad_norm=...) equals clip_grad_norm_ then torch's step, with GradScaler too
    (where the norm is that of the unscaled grads; the 0-"norm", a count, is not divided by the scale).
    The grads keep their values without GradScaler and are left unscaled and clipped with it (as
    scaler.unscale_ + clip_grad_norm_ leave torch's). float64 to float64 rounding: the folded divisor
    is float64 then."""
    if grad_scaler and device != "cpu":
        pytest.skip("the CPU GradScaler is enough to check the folded unscale")
    make_ours, make_theirs = FOLDED_OPTIMIZERS[name]
    ours, theirs = _sgd_pair(dtype, device, seed=11, nonempty=p == INF)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)
    opt = make_ours(ours, max_grad_norm=0.4, grad_norm_type=p)
    ref = make_theirs(theirs)
    scale = 256.0 if grad_scaler else 1.0
    if grad_scaler:
        s_ours = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1000)
        s_theirs = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1000)
        s_ours.scale(torch.ones(())), s_theirs.scale(torch.ones(()))
    for step in range(4):
        for a, b in zip(ours, theirs):
            if a.grad is not None:
                g = torch.randn_like(a) * 3
                a.grad.copy_(g * scale)
                b.grad.copy_(g * scale)
        grads_before = [a.grad.clone() if a.grad is not None else None for a in ours]
        if grad_scaler:
            s_ours.step(opt)
            s_ours.update()
            s_theirs.unscale_(ref)
            n = torch.nn.utils.clip_grad_norm_(theirs, 0.4, p)
            s_theirs.step(ref)
            s_theirs.update()
        else:
            opt.step()
            n = torch.nn.utils.clip_grad_norm_(theirs, 0.4, p)
            ref.step()
        torch.testing.assert_close(opt.last_grad_norm, n, **_norm_tol([dtype], p))
        for a, b, g in zip(ours, theirs, grads_before):
            torch.testing.assert_close(a.detach(), b.detach(), **tol)
            if g is None:
                continue
            if grad_scaler:
                torch.testing.assert_close(a.grad, b.grad, **tol)
            else:
                assert torch.equal(a.grad, g)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(FOLDED_OPTIMIZERS) + ["SGD"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grad_scaler", [False, True])
def test_folded_clipping_of_a_norm_near_the_float32_limit(device, name, dtype, grad_scaler):
    """A finite norm near float32's limit (an inf-norm; a float32 2-norm overflows past ~1.8e19) with
    max_norm < 1: the kernels get (grad_scale or 1) and clip_coef as two factors, as torch applies
    them (unscale, then clip). One divisor (grad_scale or 1) / clip_coef overflowed float32 here, and
    the update took zero grads where torch takes the clipped ones."""
    if grad_scaler and device != "cpu":
        pytest.skip("the CPU GradScaler is enough to check the folded unscale")
    make_ours, make_theirs = FOLDED_OPTIMIZERS.get(name, (
        lambda ps, **kw: fusedopt.optim.SGD(ps, lr=0.1, momentum=0.9, **kw),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False)))
    gen = torch.Generator().manual_seed(3)
    values = [torch.randn(n, generator=gen) * 1e37 for n in (5, 33, 1)]
    values[0][0] = 2e38  # the inf-norm; 1 / clip_coef = norm / 0.1 is past float32's range
    scale = 1024.0 if grad_scaler else 1.0
    ours, theirs = [], []
    for v in values:
        a = torch.nn.Parameter(torch.randn(v.shape, generator=gen).to(dtype=dtype, device=device))
        b = torch.nn.Parameter(a.detach().clone())
        # With GradScaler the scaled grads are the huge ones (a finite scaled norm is all it checks).
        a.grad = (v / 1024.0 * scale if grad_scaler else v).to(dtype=dtype, device=device)
        b.grad = a.grad.clone()
        ours.append(a)
        theirs.append(b)
    initial = [b.detach().clone() for b in theirs]
    max_norm = 0.1
    opt = make_ours(ours, max_grad_norm=max_norm, grad_norm_type=INF)
    ref = make_theirs(theirs)
    if grad_scaler:
        s_ours = torch.amp.GradScaler("cpu", init_scale=scale)
        s_theirs = torch.amp.GradScaler("cpu", init_scale=scale)
        s_ours.scale(torch.ones(())), s_theirs.scale(torch.ones(()))
        s_ours.step(opt)
        s_theirs.unscale_(ref)
        n = torch.nn.utils.clip_grad_norm_(theirs, max_norm, INF)
        s_theirs.step(ref)
    else:
        opt.step()
        n = torch.nn.utils.clip_grad_norm_(theirs, max_norm, INF)
        ref.step()
    assert torch.isfinite(n)
    torch.testing.assert_close(opt.last_grad_norm.double(), n.double(), rtol=1e-5, atol=0)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else TOL[dtype]
    # torch's clipped grads move the params (zero grads would not)
    assert not all(torch.equal(b.detach(), before) for b, before in zip(theirs, initial))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), **tol)
        if grad_scaler:  # left unscaled and clipped, as scaler.unscale_ + clip_grad_norm_ leave them
            torch.testing.assert_close(a.grad, b.grad, **tol)


def _optimizer_op_call(name, device, dtype):
    """(lists, kwargs) of one call of torch.ops.fusedopt.<name>_ over three params of dtype."""
    gen = torch.Generator().manual_seed(8)
    shapes = [(5,), (37,), ()]
    mk = lambda: [torch.randn(s, generator=gen).to(dtype=dtype, device=device) for s in shapes]  # noqa: E731
    pos = lambda: [torch.rand(s, generator=gen).to(dtype=dtype, device=device) for s in shapes]  # noqa: E731
    steps = lambda: [torch.full((), 2.0, device=device) for _ in shapes]  # noqa: E731
    if name == "sgd":
        return (mk(), mk(), mk()), dict(lr=0.1, weight_decay=0.01, momentum=0.9, dampening=0.0,
                                        nesterov=True, maximize=False, is_first_step=False)
    if name == "adam":
        return (mk(), mk(), mk(), pos(), pos(), steps()), dict(
            lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=True, maximize=False,
            decoupled_weight_decay=True, master_params=[])
    if name == "rmsprop":
        square_avgs = [1 + t for t in pos()]  # above grad_avg ** 2: centered's sqrt stays real
        return (mk(), mk(), square_avgs, mk(), [t / 4 for t in pos()], steps()), dict(
            lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=True, maximize=False)
    return (mk(), mk(), pos(), steps()), dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, eps=1e-10,
                                              maximize=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "adagrad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_factor_grad_scale_divides_then_multiplies(device, name, dtype):
    """grad_scale = [s, c] (folded clipping) takes each grad as g / s * c, to the bit: the written
    grads equal torch's (g / s) * c, and the update equals the op's on those grads without a scale.
    s = 3 is not a power of two, so a kernel that multiplied by 1 / s or by c / s would differ."""
    op = getattr(torch.ops.fusedopt, name + "_")
    lists, kwargs = _optimizer_op_call(name, device, dtype)
    factors = torch.tensor([3.0, 0.3], dtype=dtype, device=device)
    expected_grads = [g / factors[0] * factors[1] for g in lists[1]]
    plain = [[t.clone() for t in ts] for ts in lists]
    plain[1] = [g.clone() for g in expected_grads]
    op(*lists, **kwargs, grad_scale=factors)
    op(*plain, **kwargs)
    for g, e in zip(lists[1], expected_grads):
        assert torch.equal(g, e)
    for ours, theirs in zip(lists, plain):
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_part_of_a_mixed_list_is_folded_in_float32(device):
    """float32 tensors are folded in float32 also beside float64 ones (the parts then combined in
    float64), on every device: a p-th power past float32's range overflows as it does without the
    float64 tensor (CUDA folded every element in float64 when any tensor was float64)."""
    big = torch.tensor([1e4], device=device)
    one = torch.ones(3, dtype=torch.float64, device=device)
    alone = torch.ops.fusedopt.total_norm([big], 10.0)
    mixed = torch.ops.fusedopt.total_norm([big, one], 10.0)
    assert torch.isinf(alone) and alone.dtype == torch.float32
    assert torch.isinf(mixed) and mixed.dtype == torch.float64
    small = torch.tensor([3.0, 4.0], device=device)  # within range: the same norm either way
    assert torch.ops.fusedopt.total_norm([small, one * 0], 2.0).item() == 5.0


def test_folded_clipping_norm_over_groups_is_get_total_norm():
    """With max_grad_norm the step takes the norm of every group's collected grads in one C++ call
    (_C.collected_total_norm) when they are dense on one device, else through get_total_norm; either
    way the norm is get_total_norm's of the grads in group order, to the bit."""
    for gaps in (False, True):
        groups = [_params_with_grads(torch.float32, "cpu", seed=31), _params_with_grads(torch.float16, "cpu", seed=32)]
        if gaps:
            groups[1][0].grad = torch.randn(groups[1][0].shape[::-1]).half().t()  # another memory order
            bad = torch.nn.Parameter(torch.zeros(4, 3))
            bad.grad = torch.randn(4, 6)[:, ::2]
            groups[0].append(bad)
        grads = [q.grad.clone() for group in groups for q in group if q.grad is not None]
        expected = get_total_norm(grads, 3.0)
        opt = fusedopt.optim.SGD([{"params": groups[0]}, {"params": groups[1], "lr": 0.1}], lr=0.01,
                                 max_grad_norm=1.0, grad_norm_type=3.0)
        opt.step()
        assert torch.equal(opt.last_grad_norm, expected)


def test_folded_clipping_refuses_empty_grads_as_clip_grad_norm_():
    """The folded norm is clip_grad_norm_'s: with an inf or negative norm_type and an empty grad, torch's
    error (the norm of an empty tensor has no identity), raised before anything changes, on the fused
    one-device path as on get_total_norm's; other orders take the empty grad as zeros."""
    for p in (INF, -1.0, 2.0):
        params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.zeros(0))]
        for q in params:
            q.grad = torch.full_like(q, 0.5)
        opt = fusedopt.optim.AdamW(params, lr=0.1, max_grad_norm=1.0, grad_norm_type=p)
        if p == 2.0:
            opt.step()
            assert not torch.equal(params[0].detach(), torch.ones(3))
            continue
        with pytest.raises(RuntimeError) as ours:
            opt.step()
        copies = [q.detach().clone().requires_grad_() for q in params]
        for c, q in zip(copies, params):
            c.grad = q.grad.clone()
        with pytest.raises(RuntimeError) as theirs:
            torch.nn.utils.clip_grad_norm_(copies, 1.0, p)
        assert "does not have an identity" in str(theirs.value)
        assert str(ours.value) == str(theirs.value)
        assert torch.equal(params[0].detach(), torch.ones(3)) and opt.state == {}


# ---- the ops' write_grads=False (folded clipping without GradScaler) ---------------------------------

def _op_samples_with_grad_scale(device):
    """(op, args, kwargs) for every optimizer op: each module's opcheck samples (every variant, master
    weights included) with a grad_scale and no skip."""
    import test_adagrad
    import test_adam
    import test_rmsprop
    import test_sgd
    for module, op in [(test_sgd, torch.ops.fusedopt.sgd_), (test_adam, torch.ops.fusedopt.adam_),
                       (test_rmsprop, torch.ops.fusedopt.rmsprop_), (test_adagrad, torch.ops.fusedopt.adagrad_)]:
        for args, kwargs in module._opcheck_samples(device):
            kwargs = dict(kwargs, grad_scale=torch.tensor(2.5, device=device), found_inf=None)
            yield op, args, kwargs


@pytest.mark.parametrize("device", DEVICES)
def test_ops_without_write_grads_leave_the_grads(device):
    """write_grads=False: the update is exactly that of write_grads=True (grads divided by grad_scale),
    and the grads keep their bits."""
    for op, args, kwargs in _op_samples_with_grad_scale(device):
        masters = kwargs.get("master_params", [])  # adam_'s master weights: a keyword list it updates
        runs = []
        for write in (True, False):
            lists = [[t.clone() for t in lst] for lst in args]
            own_masters = [t.clone() for t in masters]
            call_kwargs = dict(kwargs, write_grads=write)
            if masters:
                call_kwargs["master_params"] = own_masters
            op(*lists, **call_kwargs)
            runs.append(lists + [own_masters])
        written, kept = runs
        for k, (a, b, before) in enumerate(zip(written, kept, list(args) + [masters])):
            for x, y, z in zip(a, b, before):
                if k == 1:  # grads
                    assert torch.equal(y, z), f"{op}: grads changed with write_grads=False"
                    if z.numel():
                        assert not torch.equal(x, z), f"{op}: grads not unscaled with write_grads=True"
                else:
                    torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True,
                                               msg=lambda m: f"{op}: list {k} differs between write_grads=True and False: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ops_divide_by_a_float64_grad_scale(device, dtype):
    """grad_scale may be float64 (folded clipping of float64 grads): the grads are divided by it in the
    kernel's math type, float64 for float64 grads (a float32 divisor would differ), written back."""
    scale = 1 / 0.3  # not a float32
    p, g = make_tensor((37,), dtype, device), make_tensor((37,), dtype, device)
    divided = g / torch.tensor(scale, dtype=torch.float64, device=device).to(dtype)
    for call in (
        lambda ps, gs, **kw: torch.ops.fusedopt.sgd_(
            ps, gs, [], lr=0.1, weight_decay=0.01, momentum=0.0, dampening=0.0, nesterov=False,
            maximize=False, is_first_step=False, **kw),
        lambda ps, gs, **kw: torch.ops.fusedopt.adam_(
            ps, gs, [torch.zeros_like(p)], [torch.zeros_like(p)], [],
            [torch.zeros((), device=device)], lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
            weight_decay=0.01, amsgrad=False, maximize=False, decoupled_weight_decay=True,
            master_params=[], **kw),
    ):
        p1, g1, p2 = p.clone(), g.clone(), p.clone()
        call([p1], [g1], grad_scale=torch.tensor([scale], dtype=torch.float64, device=device))
        call([p2], [divided.clone()])
        assert torch.equal(g1, divided)
        assert torch.equal(p1, p2)
    if dtype == torch.float64:  # and the float32 rounding of the scale would not give these bits
        assert not torch.equal(divided, g / torch.tensor(scale, dtype=torch.float32, device=device).double())


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_without_write_grads(device):
    for op, args, kwargs in _op_samples_with_grad_scale(device):
        torch.library.opcheck(op.default, args, dict(kwargs, write_grads=False))


# ---- edge cases against torch.nn.utils directly -------------------------------------------------------

def _outcome(fn, *args, **kwargs):
    """A call's result (value with NaNs, dtype, shape, device) or its exception (type, message), and
    its warnings, comparable between torch and us."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            r = fn(*args, **kwargs)
            result = None if r is None else (r.double().nan_to_num(-7.0).tolist(), r.dtype, r.shape, r.device)
        except Exception as e:  # noqa: BLE001  (the point is to compare them)
            result = (type(e), str(e))
    return result, [str(w.message) for w in caught]


def _grads_of(specs):
    """Parameters whose grads are the given tensors (None: no grad)."""
    params = []
    for g in specs:
        if g is not None and g.layout not in (torch.strided, torch.sparse_coo):
            p = g.clone()  # (a dense param takes dense and sparse COO grads only)
        else:
            p = torch.nn.Parameter(torch.zeros(g.shape if g is not None else (2,), dtype=getattr(g, "dtype", None),
                                               device=getattr(g, "device", None)))
        p.grad = None if g is None else g.clone()
        params.append(p)
    return params


def _same_grads(ours, theirs):
    for a, b in zip(ours, theirs):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)


def test_norms_without_identity_refuse_empty_tensors():
    """torch takes each tensor's norm first, and the inf and negative-order norms of an empty tensor
    have no identity: an error (its message), also where the other tensors have elements, raised
    before any grad changes. We took the max (inf) or the sum of powers over the elements there are."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, generator=g), torch.randn(2, 3, generator=g)
    for tensors in ([torch.zeros(0)], [torch.zeros(0), x], [x, y, torch.zeros(3, 0)], [torch.zeros(0, 2), torch.zeros(0)]):
        for p in (INF, -INF, -1.0, -0.5, -1234567.0, "inf"):
            for foreach in (None, False):
                ours = _outcome(get_total_norm, tensors, p, foreach=foreach)
                assert ours == _outcome(torch.nn.utils.get_total_norm, tensors, p, foreach=foreach)
                assert ours[0][0] is RuntimeError, (tensors, p)
            for error_if_nonfinite in (False, True):
                ours_p, theirs_p = _grads_of(tensors), _grads_of(tensors)
                ours = _outcome(clip_grad_norm_, ours_p, 0.5, p, error_if_nonfinite)
                assert ours == _outcome(torch.nn.utils.clip_grad_norm_, theirs_p, 0.5, p, error_if_nonfinite)
                _same_grads(ours_p, theirs_p)
                assert all(torch.equal(q.grad, t) for q, t in zip(ours_p, tensors))
        for p in (2.0, 1.0, 0.0, 0.5):  # these have an identity: the empty tensors count as zeros
            ours, theirs = get_total_norm(tensors, p), torch.nn.utils.get_total_norm(tensors, p)
            torch.testing.assert_close(ours, theirs, rtol=2e-6, atol=0)


def test_nan_norm_type_as_torch():
    """torch computes a norm of order NaN: linalg.vector_norm of no element is 0, of one element its
    absolute value, of more NaN; the total is that norm of the per-tensor norms. clip_grad_norm_ then
    scales by NaN (or by the coefficient of that absolute value), or raises with error_if_nonfinite.
    Our op refused NaN (a RuntimeError naming norm_type)."""
    nan = float("nan")
    cases = [[torch.tensor(-2.5)], [torch.tensor([3.0])], [torch.tensor([3.0], dtype=torch.float64)],
             [torch.tensor([1.0, 2.0])], [torch.zeros(0)], [torch.zeros(0), torch.zeros(0)],
             [torch.tensor([3.0]), torch.tensor([4.0])], [torch.zeros(0), torch.tensor([2.0])],
             [torch.tensor([float("inf")])], [torch.randn(4, 5), torch.randn(3, dtype=torch.float64)]]
    for tensors in cases:
        for p in (nan, "nan", torch.tensor(nan)):
            for error_if_nonfinite in (False, True):
                ours = _outcome(get_total_norm, tensors, p, error_if_nonfinite)
                assert ours == _outcome(torch.nn.utils.get_total_norm, tensors, p, error_if_nonfinite), tensors
                ours_p, theirs_p = _grads_of(tensors + [None]), _grads_of(tensors + [None])
                ours = _outcome(clip_grad_norm_, ours_p, 0.5, p, error_if_nonfinite)
                assert ours == _outcome(torch.nn.utils.clip_grad_norm_, theirs_p, 0.5, p, error_if_nonfinite)
                _same_grads(ours_p, theirs_p)
    with pytest.raises(RuntimeError, match="norm_type is nan"):  # the op itself still refuses NaN
        torch.ops.fusedopt.total_norm([torch.ones(3)], nan)


def test_clip_grads_with_norm_takes_total_norm_as_torch():
    """torch multiplies the grads by clamp(max_norm / (total_norm + 1e-6), max=1) with _foreach_mul_,
    which takes a 0-dim tensor only: a (1,)-shaped total_norm (or any other shape) is a RuntimeError,
    a number a TypeError, a complex tensor a NotImplementedError (clamp), all before any grad changes.
    We scaled by the single element, and raised AttributeError for a number."""
    specs = [torch.randn(3), torch.randn(2, 2), None]
    for total_norm in (torch.tensor([5.0]), torch.tensor([[5.0]], dtype=torch.float64), torch.tensor([5.0, 6.0]),
                       torch.zeros(0), 5.0, 5, None, torch.tensor(5.0 + 0j), torch.tensor(5.0), torch.tensor(0.1)):
        for max_norm in (1.0, "a"):
            ours_p, theirs_p = _grads_of(specs), _grads_of(specs)
            ours = _outcome(clip_grads_with_norm_, ours_p, max_norm, total_norm)
            theirs = _outcome(torch.nn.utils.clip_grads_with_norm_, theirs_p, max_norm, total_norm)
            if theirs[0] is None:
                assert ours == theirs, total_norm
            else:
                assert ours[0] is not None and ours[0][0] is theirs[0][0], (total_norm, ours, theirs)
                if ours[0][0] is not TypeError:  # (torch's come from `+` and clamp's argument parser)
                    assert ours == theirs, total_norm
            _same_grads(ours_p, theirs_p)
        # no grads: nothing is checked, as in torch
        assert clip_grads_with_norm_(_grads_of([None]), 1.0, total_norm) is None


def test_clip_grad_norm_raises_in_torchs_order():
    """torch reads the params' grads, converts norm_type, takes the norm (and its non-finite check),
    and converts max_norm only then; we converted both numbers first."""
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([1.0, INF, 2.0])
    for params, norm_type, max_norm, error_if_nonfinite in [
            ([p, 1.0], "a", 1.0, False), ([p, None], None, "a", False), ([p], "a", None, False),
            ([p], 2.0, "a", True), ([p], INF, None, True), ([p], 2.0, "a", False)]:
        before = p.grad.clone()
        ours = _outcome(clip_grad_norm_, params, max_norm, norm_type, error_if_nonfinite)
        assert ours == _outcome(torch.nn.utils.clip_grad_norm_, params, max_norm, norm_type, error_if_nonfinite)
        assert ours[0][0] in (AttributeError, TypeError, ValueError, RuntimeError)
        assert torch.equal(p.grad, before)


def _torch_takes(call) -> bool:
    try:
        call(torch.nn.utils)
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_refused_entries_raise_torchs_exception_types():
    """Where torch.nn.utils raises too, the exception type is its own: RuntimeError for integer and
    bool tensors and None entries, NotImplementedError for float8 tensors (we raised TypeError); our
    messages name the entry. Sparse COO tensors are taken (test_sparse_grads_*); the other sparse
    layouts are refused with a NotImplementedError naming the entry, before anything changes (torch
    scales them in clip_grads_with_norm_, and fails in their norm with a RuntimeError of its
    internals)."""
    entries = [torch.arange(3), torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.uint8),
               torch.ones(3).to(torch.float8_e4m3fn), torch.ones(2, 3).to_sparse_csr(),
               torch.ones(3, 2).to_sparse_csc(), torch.ones(2, 2).to_sparse_bsr((1, 1)), None]
    for bad in entries:
        for fn in ("get_total_norm", "clip_grad_norm_", "clip_grads_with_norm_"):
            dense = torch.nn.Parameter(torch.ones(2))
            dense.grad = torch.full((2,), 5.0)
            if fn == "get_total_norm":
                def call(utils):
                    return getattr(utils, fn)([dense.grad, bad])
            elif bad is None:
                continue  # (a param without a grad is skipped)
            else:
                def call(utils):
                    r = bad.clone() if bad.layout != torch.strided else torch.zeros(3, dtype=bad.dtype)
                    r.grad = bad.clone()  # a plain tensor takes any grad of its layout and dtype
                    args = (1.0, torch.tensor(20.0)) if fn == "clip_grads_with_norm_" else (1.0,)
                    return getattr(utils, fn)([dense, r], *args)
            if bad is not None and bad.layout != torch.strided:
                with pytest.raises(NotImplementedError, match=rf"(grads|tensors)\[1\] has layout {bad.layout}"):
                    call(fusedopt.nn.utils)
                assert torch.equal(dense.grad, torch.full((2,), 5.0))
                continue
            with pytest.raises(Exception) as theirs:
                call(torch.nn.utils)
            with pytest.raises(theirs.type):
                call(fusedopt.nn.utils)


# --- Sparse COO gradients (nn.Embedding(sparse=True)) -------------------------------------------------
# torch 2.14 takes the norm of a sparse COO tensor (2.13 has no sparse kernel of linalg.vector_norm and
# raises NotImplementedError): the norm of its coalesced values, duplicate indices summed first and the
# elements it does not store not counted (for the -inf and negative orders the norm is then not the
# dense tensor's). fusedopt takes them so on every torch version. Where torch has the sparse kernel
# (CI runs the suite on torch 2.14 too) the tests compare with torch itself; everywhere they compare
# with that definition.

def _torch_takes_sparse_norms() -> bool:
    try:
        torch.linalg.vector_norm(torch.ones(2).to_sparse())
    except NotImplementedError:
        return False
    return True


TORCH_SPARSE_NORMS = _torch_takes_sparse_norms()
SPARSE_NORM_TYPES = [2.0, 1.0, INF, -INF, 0.0, 0.5, 3.0, -1.5]


def _coo(indices, values, shape, dtype=torch.float32, device="cpu"):
    return torch.sparse_coo_tensor(torch.tensor(indices, dtype=torch.long), torch.tensor(values, dtype=dtype),
                                   shape, device=device, check_invariants=True)


def _embedding_grad(seed, dtype=torch.float32, device="cpu", ids=(1, 1, 4, 2, 4, 1), num=7, dim=3):
    """The grad of nn.Embedding(sparse=True): uncoalesced, one row per looked-up id (repeats included)."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.nn.Embedding(num, dim, sparse=True)
    out = emb(torch.tensor(ids))
    (out * torch.randn(out.shape, generator=g) * 3).sum().backward()
    grad = emb.weight.grad
    assert grad.layout == torch.sparse_coo and not grad.is_coalesced()
    return grad.to(device=device, dtype=dtype)


def _sparse_zoo(dtype=torch.float32, device="cpu", seed=0):
    """Sparse COO tensors with values: uncoalesced embedding grads, their coalesced form, implicit zeros,
    duplicates that cancel (an explicit zero), two sparse dims, and a value per index given twice."""
    return [_embedding_grad(seed, dtype, device), _embedding_grad(seed + 1, dtype, device).coalesce(),
            _embedding_grad(seed + 2, dtype, device, ids=(3, 3, 3)),
            _coo([[0, 2]], [1.5, -2.0], (5,), dtype, device),
            _coo([[0, 0, 1]], [1.0, -1.0, 4.0], (2,), dtype, device),
            _coo([[0, 1, 0], [2, 2, 2]], [1.5, -2.0, 0.5], (3, 4), dtype, device)]


def _tensor_norm64(t, p):
    """One tensor's norm in float64, by the definition: a sparse tensor's is its coalesced values'."""
    values = t.coalesce().values() if t.layout == torch.sparse_coo else t
    return torch.linalg.vector_norm(values.detach().double().reshape(-1).cpu(), p)


def _definition_norm(tensors, p):
    """torch's total norm: that norm of the stacked per-tensor norms, in float64."""
    return torch.linalg.vector_norm(torch.stack([_tensor_norm64(t, p) for t in tensors]), p)


def _sparse_lists(device):
    g = torch.Generator().manual_seed(5)

    def dense(*shape, dtype=torch.float32):
        return (torch.randn(*shape, generator=g) * 2).to(device=device, dtype=dtype)

    return {
        "sparse": _sparse_zoo(device=device),
        "mixed": [dense(4, 3), *_sparse_zoo(device=device, seed=10)[:3], dense(6), dense(5, 2)[:, ::2]],
        "float64": [dense(3, dtype=torch.float64), _embedding_grad(20, torch.float64, device), dense(4)],
        "half": [_embedding_grad(30, torch.float16, device), _embedding_grad(31, torch.bfloat16, device),
                 dense(5, dtype=torch.float16), _coo([[0, 1]], [1.0, 60000.0], (3,), torch.float16, device)],
    }


def _scaled_as_torch(grads, max_norm, total_norm):
    """The grads as torch.nn.utils.clip_grads_with_norm_ leaves them with this total norm: it scales
    sparse grads on every version (a float16/bfloat16 norm is taken in float32, as ours)."""
    params = _grads_of(grads)
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total_norm.float() if total_norm.dtype in
                                         (torch.float16, torch.bfloat16) else total_norm)
    return [q.grad for q in params]


def _assert_same_grad(a, b, rtol=0.0, atol=0.0):
    """Equal grads (to the bit by default): a sparse one with the same indices, coalesced or not as b."""
    assert a.layout == b.layout and a.dtype == b.dtype
    if a.layout == torch.sparse_coo:
        assert a.is_coalesced() == b.is_coalesced() and torch.equal(a._indices(), b._indices())
        a, b = a._values(), b._values()
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)


def test_sparse_norm_definition_is_torch_2_14s():
    """What the tests below take as the norm of a sparse COO tensor is torch 2.14's: the norm of its
    coalesced values, also for an uncoalesced tensor and where it stores explicit zeros, not counting
    the elements it does not store (the dense tensor's -inf and negative-order norms are then 0).
    torch 2.13 has no sparse kernel."""
    implicit_zeros = _coo([[0, 2]], [1.5, -2.0], (5,))
    for t in _sparse_zoo():
        for p in SPARSE_NORM_TYPES + [math.nan]:
            if not TORCH_SPARSE_NORMS:
                with pytest.raises(NotImplementedError):
                    torch.linalg.vector_norm(t, p)
                continue
            theirs = torch.linalg.vector_norm(t, p)
            assert theirs.dtype == t.dtype and theirs.shape == ()
            torch.testing.assert_close(theirs.double(), _tensor_norm64(t, p), rtol=1e-6, atol=0, equal_nan=True)
    assert _tensor_norm64(implicit_zeros, -INF) == 1.5 and torch.linalg.vector_norm(implicit_zeros.to_dense(), -INF) == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["sparse", "mixed", "float64", "half"])
@pytest.mark.parametrize("p", SPARSE_NORM_TYPES)
def test_sparse_grads_norm_and_clip_as_torch_2_14(device, kind, p):
    """get_total_norm and clip_grad_norm_ of lists holding sparse COO grads (uncoalesced embedding grads
    among them) and dense ones: torch 2.14's norm, float32 for half grads (as for dense ones), and the
    grads scaled in place as torch scales them: the same tensor objects, uncoalesced ones still
    uncoalesced, the values multiplied by torch's coefficient."""
    tensors = _sparse_lists(device)[kind]
    expected_dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    expected = _definition_norm(tensors, p)
    ours = get_total_norm(tensors, p)
    assert ours.dtype == expected_dtype and ours.shape == () and ours.device == tensors[0].device
    torch.testing.assert_close(ours.double().cpu(), expected, **_norm_tol(tensors, p))
    if TORCH_SPARSE_NORMS:
        # torch: a float16/bfloat16 tensor's norm in its dtype; compare on float32 copies of those
        # (of sparse ones once coalesced: duplicates are summed in the grad's dtype).
        upcast = [(t.coalesce() if t.is_sparse else t).float() if t.dtype in (torch.float16, torch.bfloat16) else t
                  for t in tensors]
        theirs = torch.nn.utils.get_total_norm(upcast, p)
        assert theirs.dtype == expected_dtype
        torch.testing.assert_close(ours, theirs, **_norm_tol(tensors, p))
    for max_norm in (0.5, 1e9):  # scaled down, and a coefficient of 1
        params = _grads_of(tensors)
        grads = [q.grad for q in params]
        norm = clip_grad_norm_(params, max_norm, p)
        assert torch.equal(norm, ours)
        assert all(q.grad is g for q, g in zip(params, grads))
        for a, b in zip(grads, _scaled_as_torch(tensors, max_norm, norm)):
            _assert_same_grad(a, b)
        if TORCH_SPARSE_NORMS and kind != "half":
            theirs_p = _grads_of(tensors)
            n_theirs = torch.nn.utils.clip_grad_norm_(theirs_p, max_norm, p)
            torch.testing.assert_close(norm, n_theirs, **_norm_tol(tensors, p))
            # (torch takes a float32 tensor's norm in float32 also next to float64 ones, we in float64)
            for a, b in zip(grads, theirs_p):
                _assert_same_grad(a, b.grad, rtol=_norm_tol(tensors, p)["rtol"] + TOL[a.dtype]["rtol"],
                                  atol=TOL[a.dtype]["atol"])
    # clip_grads_with_norm_ with a given norm: torch's results to the bit, on every version.
    params = _grads_of(tensors)
    clip_grads_with_norm_(params, 0.5, torch.tensor(7.25))
    for a, b in zip(params, _scaled_as_torch(tensors, 0.5, torch.tensor(7.25))):
        _assert_same_grad(a.grad, b)


def test_sparse_grads_leave_the_dense_paths_alone():
    """A sparse grad costs nothing when there is none: the C++ survey and clip_grad_norm_'s C++ path
    take dense lists as before (no Python survey), and hand a list holding a sparse grad to the Python
    path, modifying nothing."""
    from fusedopt import _C
    from fusedopt.nn.utils import clip_grad as module

    dense = _grads_of([torch.randn(4, 3), torch.randn(5), torch.randn(6, 4)[:, ::2]])
    sparse = _grads_of([torch.randn(3), _embedding_grad(0), torch.randn(2)])
    before = [q.grad.clone() for q in sparse]
    assert _C.survey_tensors([q.grad for q in sparse])[0] == 1
    assert _C.clip_grad_norm_plain(sparse, 1e-3, 2.0) is None
    for a, b in zip(sparse, before):
        _assert_same_grad(a.grad, b)
    assert _C.clip_grad_norm_plain(dense[:2], 1e9, 2.0) is not None

    def no_python_survey(*args):
        raise AssertionError("a list without a sparse tensor took the Python survey")

    original = module._python_survey
    module._python_survey = no_python_survey
    try:
        get_total_norm([q.grad for q in dense], 2.0)
        clip_grad_norm_(dense, 1.0, 3.0, error_if_nonfinite=True)  # the general path
        clip_grads_with_norm_(dense, 1.0, torch.tensor(2.0))
        with pytest.raises(AssertionError, match="Python survey"):
            get_total_norm([q.grad for q in sparse])
    finally:
        module._python_survey = original


def test_sparse_grads_without_values():
    """A sparse tensor without values (nnz 0, or no elements per value) is an empty tensor to torch
    2.14's norm: the inf and negative orders raise its error (linalg.vector_norm's: _foreach_norm passes
    it on, and raises its own only for a tensor without elements, whichever comes first), before any
    grad changes; the other orders count it as zeros."""
    nnz0 = _coo([[]], [], (4,))
    no_elements = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (0, 3),
                                          check_invariants=True)
    hybrid = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.zeros(2, 0), (4, 0), check_invariants=True)
    x = torch.randn(5)
    lists = [[nnz0], [no_elements], [hybrid], [x, nnz0], [x, _embedding_grad(0), nnz0],
             [torch.zeros(0), _embedding_grad(1)], [_embedding_grad(2), torch.zeros(0)],
             [nnz0, torch.zeros(0)], [torch.zeros(0), nnz0], [x, hybrid, nnz0]]
    for tensors in lists:
        first = next(t for t in tensors if t.numel() == 0 or (t.is_sparse and t._values().numel() == 0))
        for p in (INF, -INF, -1.0, "inf"):
            for foreach in (None, False):
                foreach_norm = float(p) == INF and foreach is not False and first.numel() == 0
                message = ("_foreach_norm cannot compute the infinity norm" if foreach_norm else
                           f"linalg.vector_norm cannot compute the {float(p):g} norm")
                ours = _outcome(get_total_norm, tensors, p, foreach=foreach)
                assert ours[0][0] is RuntimeError and ours[0][1].startswith(message), (tensors, p, ours)
                if TORCH_SPARSE_NORMS:  # (one dtype: torch's order is the list's)
                    assert ours == _outcome(torch.nn.utils.get_total_norm, tensors, p, foreach=foreach)
            for error_if_nonfinite in (False, True):
                params = _grads_of(tensors)
                ours = _outcome(clip_grad_norm_, params, 0.5, p, error_if_nonfinite)
                assert ours[0][0] is RuntimeError
                for q, t in zip(params, tensors):
                    _assert_same_grad(q.grad, t)
        for p in (2.0, 1.0, 0.0, 0.5, 3.0):
            ours = get_total_norm(tensors, p)
            torch.testing.assert_close(ours.double(), _definition_norm(tensors, p), rtol=2e-6, atol=0)
            if TORCH_SPARSE_NORMS:
                torch.testing.assert_close(ours, torch.nn.utils.get_total_norm(tensors, p), rtol=2e-6, atol=0)
            params = _grads_of(tensors)
            norm = clip_grad_norm_(params, 0.5, p)
            for a, b in zip(params, _scaled_as_torch(tensors, 0.5, norm)):
                _assert_same_grad(a.grad, b)


def test_sparse_grads_nan_order_and_non_finite():
    """Order NaN: torch's norm of one tensor of no value is 0, of one value (after coalescing) its
    absolute value, NaN otherwise, and NaN for two tensors or more. error_if_nonfinite: an error, before
    any grad changes, for inf or NaN values in a sparse grad."""
    one = _coo([[2]], [-3.0], (5,))
    dup = _coo([[2, 2]], [-3.0, 1.0], (5,))  # one value once coalesced: 2
    for tensors, expected in (([one], 3.0), ([dup], 2.0), ([_coo([[]], [], (4,))], 0.0),
                              ([_coo([[1, 2]], [1.0, 2.0], (4,))], math.nan), ([one, torch.zeros(0)], math.nan)):
        for p in (math.nan, "nan"):
            ours = get_total_norm(tensors, p)
            torch.testing.assert_close(ours, torch.tensor(expected), equal_nan=True)
            if TORCH_SPARSE_NORMS:
                assert _outcome(get_total_norm, tensors, p) == _outcome(torch.nn.utils.get_total_norm, tensors, p)
    for bad in (INF, math.nan):
        tensors = [torch.randn(3), _coo([[0, 1, 1]], [1.0, 2.0, bad], (4,))]
        for p in (2.0, INF, 1.0):
            params = _grads_of(tensors)
            ours = _outcome(clip_grad_norm_, params, 0.5, p, True)
            assert ours[0][0] is RuntimeError and "non-finite" in ours[0][1]
            if TORCH_SPARSE_NORMS:
                assert ours == _outcome(torch.nn.utils.clip_grad_norm_, _grads_of(tensors), 0.5, p, True)
            for q, t in zip(params, tensors):
                _assert_same_grad(q.grad, t)
            with pytest.raises(RuntimeError, match="non-finite"):
                get_total_norm(tensors, p, error_if_nonfinite=True)


def test_sparse_grads_float16_beyond_range():
    """A float16 sparse grad's norm is float32, as a dense one's: beyond float16's range it is finite
    (torch 2.14 returns inf and then zeroes the grads). Duplicates are summed in the grad's dtype, as
    torch coalesces them: a sum beyond float16's range is inf, in the grad as in its norm."""
    big = _coo([[0, 0, 1]], [20000.0, 30000.0, 50000.0], (3,), torch.float16)  # ~50000 twice once coalesced
    norm = get_total_norm([big])
    assert norm.dtype == torch.float32 and math.isfinite(norm.item()) and norm.item() > 70000
    torch.testing.assert_close(norm.double(), _definition_norm([big], 2.0), rtol=2e-5, atol=0)
    params = _grads_of([big])
    clip_grad_norm_(params, 1.0)
    values = params[0].grad._values().float()
    torch.testing.assert_close(values, big._values().float() / norm, **TOL[torch.float16])
    overflow = _coo([[0, 0]], [40000.0, 40000.0], (2,), torch.float16)
    assert overflow.coalesce().values().isinf().all() and get_total_norm([overflow]).isinf()


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_clip_grad_value_refuses_sparse_grads_as_torch():
    """torch's clamp has no sparse kernel: clip_grad_value_ raises NotImplementedError for a sparse COO
    grad and RuntimeError for a CSR one, on 2.13 and 2.14, after clamping the grads before it; we raise
    the same type before any grad changes."""
    for bad in (_embedding_grad(0), torch.randn(2, 3).to_sparse_csr()):
        for foreach in (None, False, True):
            def specs():
                return [torch.randn(4, generator=torch.Generator().manual_seed(1)) * 3, bad]
            with pytest.raises(Exception) as theirs:
                torch.nn.utils.clip_grad_value_(_grads_of(specs()), 0.5, foreach=foreach)
            params = _grads_of(specs())
            with pytest.raises(theirs.type, match=rf"grads\[1\] has layout {bad.layout}"):
                clip_grad_value_(params, 0.5, foreach=foreach)
            for q, t in zip(params, specs()):
                if t.layout == torch.sparse_coo:
                    _assert_same_grad(q.grad, t)
                elif t.layout == torch.strided:
                    assert torch.equal(q.grad, t)
    # Dense grads: torch's results.
    ours, theirs = _params_with_grads(torch.float32, "cpu", seed=3), _params_with_grads(torch.float32, "cpu", seed=3)
    clip_grad_value_(iter(ours), 0.25)
    torch.nn.utils.clip_grad_value_(iter(theirs), 0.25)
    _same_grads(ours, theirs)


def test_sparse_grads_in_folded_clipping_are_refused():
    """The optimizers refuse sparse grads (their fused kernels need dense ones), also with
    max_grad_norm=, before anything changes."""
    emb = torch.nn.Embedding(6, 3, sparse=True)
    emb(torch.tensor([1, 1, 4])).sum().backward()
    weight, grad = emb.weight.detach().clone(), emb.weight.grad.clone()
    for name in ("SGD", "Adam", "Adagrad", "RMSprop"):
        opt = getattr(fusedopt.optim, name)(emb.parameters(), lr=0.1, max_grad_norm=1.0)
        with pytest.raises(RuntimeError, match="sparse gradient"):
            opt.step()
        assert torch.equal(emb.weight.detach(), weight)
        _assert_same_grad(emb.weight.grad, grad)


def test_clip_grads_with_norm_per_grad_path_broadcasts_a_one_element_norm():
    """With foreach=False torch multiplies grad by grad (g.mul_(coef)), which broadcasts: a one-element
    total_norm of no more dimensions than the grads works there as a 0-dim one (its foreach path and
    ours refused it). Norms of more elements stay refused (torch's result then depends on broadcasting
    against each grad's shape)."""
    specs = [torch.randn(3), torch.randn(2, 2), None, torch.randn(4, 1, 2)]
    for total_norm in (torch.tensor([5.0]), torch.tensor([[5.0]], dtype=torch.float64), torch.tensor([0.5])):
        ours_p, theirs_p = _grads_of(specs), _grads_of(specs)
        ours = _outcome(clip_grads_with_norm_, ours_p, 1.0, total_norm, foreach=False)
        theirs = _outcome(torch.nn.utils.clip_grads_with_norm_, theirs_p, 1.0, total_norm, foreach=False)
        if total_norm.dim() > 1:  # a (1, 1) coefficient cannot be written into the 1-d grad: both raise
            assert ours[0][0] is theirs[0][0] is RuntimeError
        else:
            assert ours == theirs
        _same_grads(ours_p, theirs_p)


def test_an_expanded_grad_is_refused_before_any_grad_is_scaled():
    """torch scales grads in list order and its in-place mul_ refuses an expanded grad (elements sharing
    memory). We scale the dense grads in one call first, so the expanded one is checked before that:
    the call raises torch's error and leaves every grad as it was. (torch too, when the expanded grad
    comes first; when it comes later, torch has already scaled the ones before it, which we do not
    follow: a rejected call modifies nothing.)"""
    for expanded_first in (True, False):
        def params():
            dense = torch.nn.Parameter(torch.zeros(4))
            dense.grad = torch.full((4,), 5.0)
            expanded = torch.nn.Parameter(torch.zeros(4, 3))
            expanded.grad = torch.arange(4.0).view(4, 1).expand(4, 3)
            return [expanded, dense] if expanded_first else [dense, expanded]

        for fn, ref in ((clip_grad_norm_, torch.nn.utils.clip_grad_norm_),
                        (lambda ps, m: clip_grads_with_norm_(ps, m, torch.tensor(20.0)),
                         lambda ps, m: torch.nn.utils.clip_grads_with_norm_(ps, m, torch.tensor(20.0)))):
            ours_p, theirs_p, untouched = params(), params(), params()
            ours, theirs = _outcome(fn, ours_p, 1.0), _outcome(ref, theirs_p, 1.0)
            assert ours == theirs and ours[0][0] is RuntimeError
            _same_grads(ours_p, untouched)
            if expanded_first:
                _same_grads(theirs_p, untouched)


@pytest.mark.parametrize("make", [lambda ps, **kw: fusedopt.optim.SGD(ps, lr=0.1, momentum=0.9, **kw),
                                  lambda ps, **kw: fusedopt.optim.SGD(ps, lr=0.1, **kw)]
                         + [make for make, _ in FOLDED_OPTIMIZERS.values()],
                         ids=["SGD-momentum", "SGD"] + list(FOLDED_OPTIMIZERS))
def test_skipped_steps_log_their_norm(make):
    """A step GradScaler skips logs that step's norm (inf) in last_grad_norm, also the first step of a
    param, which would create state (those skip on the host and returned before the norm was taken:
    last_grad_norm stayed None, or the previous step's after add_param_group)."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = make([p], max_grad_norm=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    p.grad = torch.tensor([INF, 1.0, 1.0])
    scaler.scale(torch.ones(()))
    scaler.step(opt)
    assert opt.last_grad_norm.isinf() and torch.equal(p.detach(), torch.ones(3))
    p.grad = torch.tensor([12.0, 16.0, 0.0])  # scaled by 4: the norm of the unscaled grads is 5
    scaler.update()
    scaler.scale(torch.ones(()))
    scaler._scale.fill_(4.0)
    scaler.step(opt)
    assert opt.last_grad_norm.item() == pytest.approx(5.0)
    q = torch.nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [q]})
    q.grad = torch.tensor([INF, 0.0])
    p.grad = torch.tensor([4.0, 0.0, 0.0])
    scaler.update()
    scaler.scale(torch.ones(()))
    scaler.step(opt)
    assert opt.last_grad_norm.isinf()


def test_an_entry_that_is_no_tensor_raises_torchs_exception_type():
    """torch reads tensors[0].device first (AttributeError for anything but a tensor there); later it
    refuses None with a RuntimeError and other objects with a TypeError."""
    for tensors in ([None, torch.ones(2)], [1.0], ["a", torch.ones(2)], [torch.ones(2), None], [torch.ones(2), 1.0]):
        with pytest.raises(Exception) as ref:
            torch.nn.utils.get_total_norm(tensors)
        with pytest.raises(ref.type):
            get_total_norm(tensors)
