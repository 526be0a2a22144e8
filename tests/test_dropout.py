"""fusedopt dropout: Philox known answers, the mask scheme, statistics, autograd, and the torch-compatible
functional and module API (fusedopt.nn)."""

from __future__ import annotations

import itertools
import math
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch

import fusedopt
import fusedopt.nn.functional as FF
from conftest import DEVICES, DTYPES, HAS_CUDA

ops = torch.ops.fusedopt

# Random123's kat_vectors (Salmon et al., SC'11): counter words, key words -> output words.
PHILOX_KAT = [
    ([0x00000000] * 4, [0x00000000] * 2, [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


def philox(counters, keys, device="cpu", torch_engine=False):
    c = torch.tensor(counters, dtype=torch.long, device=device).reshape(-1, 4)
    k = torch.tensor(keys, dtype=torch.long, device=device).reshape(-1, 2)
    return ops._philox4x32_10(c, k, torch_engine).cpu()


def threshold(p):
    t = round((1 - p) * 2**32)
    return min(max(t, 1), 2**32 - 1)


def reference_keep(n, p, seed, offset=0):
    """Keep flags of n elements by the documented scheme, from the scalar Philox op."""
    blocks = (n + 3) // 4
    k = torch.arange(blocks, dtype=torch.long)
    base = offset // 4
    counters = torch.stack([torch.full_like(k, base & 0xFFFFFFFF), torch.full_like(k, base >> 32),
                            k & 0xFFFFFFFF, k >> 32], 1)
    s = seed & 0xFFFFFFFFFFFFFFFF
    keys = torch.tensor([[s & 0xFFFFFFFF, s >> 32]] * blocks, dtype=torch.long).reshape(-1, 2)
    draws = ops._philox4x32_10(counters, keys).reshape(-1)[:n]
    return draws < threshold(p)


def unpack(mask, n):
    bits = (mask.cpu().long().unsqueeze(1) >> torch.arange(8)) & 1
    return bits.reshape(-1)[:n].bool()


@pytest.mark.parametrize("device", DEVICES)
def test_philox_known_answers(device):
    for ctr, key, expected in PHILOX_KAT:
        assert philox(ctr, key, device).reshape(-1).tolist() == expected


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_philox_rejects_lists_on_two_devices():
    counters, keys = torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long)
    for c, k in ((counters.cuda(), keys), (counters, keys.cuda())):
        with pytest.raises(RuntimeError, match="expected both on one CUDA device"):
            ops._philox4x32_10(c, k)


def test_philox_agrees_with_torchs_engine():
    g = torch.Generator().manual_seed(0)
    c = torch.randint(0, 2**32, (500, 4), generator=g, dtype=torch.long)
    k = torch.randint(0, 2**32, (500, 2), generator=g, dtype=torch.long)
    for ctr, key, expected in PHILOX_KAT:
        assert ops._philox4x32_10(torch.tensor([ctr]), torch.tensor([key]), True).reshape(-1).tolist() == expected
    assert torch.equal(ops._philox4x32_10(c, k), ops._philox4x32_10(c, k, True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 5, 8, 63, 64, 65, 127, 1000, 70001])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_follows_the_documented_scheme(device, n, p):
    seed, offset = 0x123456789ABCDEF, 40
    x = torch.randn(n, device=device)
    out, mask = ops.dropout(x, p, seed=seed, offset=offset)
    assert mask.dtype == torch.uint8 and mask.shape == ((n + 7) // 8,)
    keep = reference_keep(n, p, seed, offset)
    assert torch.equal(unpack(mask, n), keep)
    # bits past the last element are zero
    assert (mask.cpu().long().unsqueeze(1) >> torch.arange(8) & 1).reshape(-1)[n:].sum() == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (3, 5, 7), (257,), (64, 33), (4, 3, 5, 5), (70001,)])
def test_output_is_input_times_mask_over_keep_probability(device, dtype, shape):
    p = 0.3
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(dtype=dtype, device=device)
    out, mask = ops.dropout(x, p, seed=7)
    keep = unpack(mask, x.numel()).reshape(shape).to(device)
    # torch's own arithmetic: noise = mask / (1 - p) in the input's dtype, then input * noise
    noise = keep.to(dtype).div_(1 - p)
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(out, x * noise, rtol=0, atol=0)
    else:  # we round once from float32; torch rounds the noise to the half type first
        expected = x.float() * keep.float() / (1 - p)
        # one ulp, relative (two roundings apart); absolute below float16's normal range (spacing 2**-24)
        torch.testing.assert_close(out.float(), expected, rtol=2 ** -7 if dtype == torch.bfloat16 else 2 ** -10,
                                   atol=0 if dtype == torch.bfloat16 else 2 ** -25)
    assert out.is_contiguous() and out.shape == x.shape and out.dtype == dtype


def test_dropped_inf_gives_nan_like_torch():
    x = torch.full((64,), float("inf"))
    out, mask = ops.dropout(x, 0.5, seed=1)
    keep = unpack(mask, 64)
    assert torch.isnan(out[~keep]).all() and torch.isinf(out[keep]).all()


@pytest.mark.parametrize("p", [0.01, 0.1, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("n", [1000, 100_003, 2_000_000])
def test_kept_fraction_within_binomial_bounds(p, n):
    _, mask = ops.dropout(torch.zeros(n), p, seed=n + int(p * 1000))
    kept = unpack(mask, n).sum().item()
    q = 1 - p
    assert abs(kept - n * q) <= 5 * math.sqrt(n * q * p) + 1


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_no_structure_across_lanes_and_blocks(p):
    n = 1 << 22
    _, mask = ops.dropout(torch.zeros(n), p, seed=99)
    keep = unpack(mask, n).double()
    q = 1 - p
    for k in (2, 4, 8, 16, 64, 1024):  # lanes of a Philox call, mask bytes, SIMD chunks, blocks
        rates = keep.reshape(-1, k).mean(0)
        per = n // k
        assert (rates - q).abs().max() <= 5 * math.sqrt(q * p / per), k
    # adjacent bits (within and across Philox calls) and bits 4 and 64 apart are uncorrelated
    for lag in (1, 3, 4, 64):
        a, b = keep[:-lag] - q, keep[lag:] - q
        corr = (a * b).mean() / (q * p)
        assert abs(corr) <= 5 / math.sqrt(n), lag


def test_seed_reproduces_and_successive_calls_differ():
    x = torch.randn(10_000)
    torch.manual_seed(3)
    a1, a2 = FF.dropout(x, 0.5), FF.dropout(x, 0.5)
    torch.manual_seed(3)
    b1, b2 = FF.dropout(x, 0.5), FF.dropout(x, 0.5)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)
    # explicit (seed, offset): a pure function of them; another offset gives another mask
    m1 = ops.dropout(x, 0.5, seed=5, offset=8)[1]
    assert torch.equal(m1, ops.dropout(x, 0.5, seed=5, offset=8)[1])
    assert not torch.equal(m1, ops.dropout(x, 0.5, seed=5, offset=12)[1])
    assert not torch.equal(m1, ops.dropout(x, 0.5, seed=6, offset=8)[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_uses_the_forward_mask(dtype):
    x = (torch.rand(5000, dtype=torch.float64) + 0.5).to(dtype).requires_grad_()
    y = FF.dropout(x, 0.4)
    g = torch.randn(5000, dtype=dtype)
    y.backward(g)
    keep = y.detach() != 0
    expected = g.double() * keep.double() / 0.6
    # g * (1 / 0.6) in float32 (float64 for float64), rounded once to dtype: within two ulps of the math
    # type's rounding of the scale and one of the store
    ulp = {torch.float32: 2 ** -23, torch.float64: 2 ** -52, torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}[dtype]
    torch.testing.assert_close(x.grad.double(), expected, rtol=2 * ulp, atol=0)


@pytest.mark.parametrize("backend", ["aot_eager_decomp_partition", "inductor"])
def test_compiled_calls_on_one_tensor_draw_two_masks(backend):
    """Two dropouts of one tensor (R-Drop) stay two draws in a compiled training graph, each backward
    with its own forward's mask. Before the ops were tagged nondeterministic_seeded (and, before torch
    2.14, registered as ordered effects) the graph's common-subexpression pass merged them into one."""
    def f(x):
        return FF.dropout(x, 0.5), FF.dropout(x, 0.5)

    x = torch.ones(4096, requires_grad=True)
    torch._dynamo.reset()
    with torch._inductor.config.patch(force_disable_caches=True), warnings.catch_warnings():
        # (a cached graph would hide a merge; torch warns that this also turns off its profile cache)
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")
        a, b = torch.compile(f, backend=backend)(x)
        (a + 3 * b).sum().backward()
    torch._dynamo.reset()
    assert not torch.equal(a, b)
    assert torch.equal(x.grad, (a != 0).float() * 2 + 3 * (b != 0).float() * 2)


@pytest.mark.parametrize("inplace", [False, True])
def test_saved_memory_is_the_packed_mask(inplace):
    n = 1 << 20
    saved = []

    def pack(t):
        saved.append(t.untyped_storage().nbytes())
        return t

    x = torch.randn(n, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        src = x * 1 if inplace else x
        y = FF.dropout(src, 0.5, inplace=inplace)
    y.sum().backward()
    assert sum(saved) <= n // 8 + 64, saved


def test_gradcheck_float64_with_fixed_seed():
    x = torch.randn(3, 70, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: ops.dropout(t, 0.3, seed=11)[0], (x,))
    torch.autograd.gradgradcheck(lambda t: ops.dropout(t, 0.3, seed=11)[0], (x,))
    torch.autograd.gradcheck(lambda t: ops.dropout(t, 0.3, 7, seed=11)[0], (x,))

    def inplace(t):
        return fusedopt._ops.dropout.dropout_(t.clone(), 0.3, seed=11)
    torch.autograd.gradcheck(inplace, (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = torch.randn(4, 33, device=device)
    torch.library.opcheck(ops.dropout.default, (x, 0.3), {"seed": 3, "offset": 4})
    torch.library.opcheck(ops.dropout.default, (x, 0.3, 33), {"seed": 3})
    torch.library.opcheck(ops.dropout_.default, (x.clone(), 0.3), {"seed": 3})
    # with an input that requires grad: the Autograd registration and the compiled backward are checked too
    torch.library.opcheck(ops.dropout.default, (x.clone().requires_grad_(), 0.3), {"seed": 3})
    _, mask = ops.dropout(x, 0.3, seed=3)
    torch.library.opcheck(ops.dropout_backward.default, (torch.randn(4, 33, device=device), mask, 0.3))
    c = torch.randint(0, 2**32, (5, 4), device=device)
    torch.library.opcheck(ops._philox4x32_10.default, (c, c[:, :2].contiguous()))


def test_identity_cases_and_p_one():
    x = torch.randn(100)
    assert FF.dropout(x, 0.0) is x
    assert FF.dropout(x, 0.5, training=False) is x
    assert FF.dropout(x, 0.5, training=False, inplace=True) is x
    empty = torch.empty(0, 3)
    assert FF.dropout(empty, 0.5) is empty
    assert torch.equal(FF.dropout(x, 1.0), torch.zeros(100))
    assert torch.isnan(FF.dropout(torch.tensor([float("inf")]), 1.0)).all()  # torch: inf * 0
    m = fusedopt.nn.Dropout(0.5)
    m.eval()
    assert m(x) is x
    y = x.clone()
    out = FF.dropout(y, 0.5, inplace=True)
    assert out is y and ((y == 0) | torch.isclose(y, x * 2)).all()
    # p = 0 and p = 1 through the op: the mask says so
    _, mask = ops.dropout(torch.randn(13), 0.0)
    assert unpack(mask, 13).all() and mask[-1].item() == 0b11111
    _, mask = ops.dropout(torch.randn(13), 1.0)
    assert not unpack(mask, 13).any()
    # An empty input draws nothing through the op either (torch's dropout returns before drawing).
    for device in ["cpu"] + (["cuda"] if HAS_CUDA else []):
        state = torch.get_rng_state() if device == "cpu" else torch.cuda.get_rng_state()
        out, mask = ops.dropout(torch.empty(0, 3, device=device), 0.5)
        assert out.shape == (0, 3) and mask.numel() == 0
        assert torch.equal(state, torch.get_rng_state() if device == "cpu" else torch.cuda.get_rng_state())


def test_non_contiguous_inputs_give_contiguous_outputs_in_logical_order():
    base = torch.randn(40, 30)
    for x in (base.t(), base[:, ::2], base[1:, 1:]):
        out, mask = ops.dropout(x, 0.5, seed=21)
        ref_out, ref_mask = ops.dropout(x.contiguous(), 0.5, seed=21)
        assert out.is_contiguous() and torch.equal(out, ref_out) and torch.equal(mask, ref_mask)
        y = x.clone()
        y_t = y.t() if x.stride(0) == 1 else y  # also a strided in-place target
        target = y_t.t() if x.stride(0) == 1 else y
        m = ops.dropout_(target, 0.5, seed=21)
        assert torch.equal(m, ref_mask) and torch.equal(target, ref_out)


def test_inplace_autograd():
    x = torch.randn(1000, requires_grad=True)
    h = x * 2
    y = FF.dropout(h, 0.5, inplace=True)
    assert y is h
    y.backward(torch.ones(1000))
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() * 4)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        FF.dropout(torch.randn(10, requires_grad=True), 0.5, inplace=True)


@pytest.mark.parametrize("record", [True, False])
def test_inplace_counts_as_a_write_for_saved_tensors(record):
    """An in-place dropout of a tensor that autograd saved makes that backward raise, recorded or
    under no_grad, as torch's in-place ops do (the op bumps input's version either way)."""
    x = torch.randn(100, requires_grad=True)
    h = x * 2
    s = h.sin()  # saves h
    version = h._version
    with torch.set_grad_enabled(record):
        FF.dropout(h, 0.5, inplace=True)
    assert h._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        s.sum().backward()


def test_inplace_on_a_view_reaches_its_base():
    x = torch.randn(6, 10, requires_grad=True)
    base = x * 1
    view = base[:, 2:7]
    FF.dropout(view, 0.5, inplace=True)
    base.backward(torch.ones(6, 10))
    expected = torch.ones(6, 10)
    expected[:, 2:7] = (view.detach() != 0).float() * 2
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("fn,shape,channels", [
    (FF.dropout1d, (4, 16, 9), 64), (FF.dropout1d, (16, 9), 16),
    (FF.dropout2d, (4, 16, 5, 3), 64), (FF.dropout3d, (2, 16, 3, 2, 4), 32), (FF.dropout3d, (16, 3, 2, 4), 16)])
@pytest.mark.parametrize("inplace", [False, True])
def test_channel_wise_masks(fn, shape, channels, inplace):
    torch.manual_seed(0)
    x = torch.rand(shape) + 1
    x0 = x.clone()
    out = fn(x, 0.5, inplace=inplace)
    if inplace:
        assert out is x
    assert out.shape == x0.shape
    per_channel = (out != 0).reshape(channels, -1)
    assert (per_channel.all(1) | ~per_channel.any(1)).all()
    assert 0 < per_channel.all(1).sum() < channels
    kept = per_channel.all(1)
    torch.testing.assert_close(out.reshape(channels, -1)[kept], x0.reshape(channels, -1)[kept] * 2)


def test_channel_wise_gradient_and_memory():
    x = torch.rand(8, 32, 6, 6, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.untyped_storage().nbytes()) or t,
                                                  lambda t: t):
        y = FF.dropout2d(x, 0.5)
    y.sum().backward()
    assert sum(saved) <= 8 * 32 // 8
    torch.testing.assert_close(x.grad, (y.detach() != 0).float() * 2)


def test_dimension_rules_and_warnings_match_torch():
    with pytest.raises(RuntimeError, match="dropout1d: Expected 2D or 3D input"):
        FF.dropout1d(torch.randn(2, 3, 4, 5))
    with pytest.warns(UserWarning, match="Received a 3D input to dropout2d"):
        FF.dropout2d(torch.randn(2, 3, 4))
    with pytest.warns(UserWarning, match="Received a 2-D input to dropout2d"):
        FF.dropout2d(torch.randn(2, 3))
    with pytest.warns(UserWarning, match="Received a 3-D input to dropout3d"):
        FF.dropout3d(torch.randn(2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="Feature dropout requires at least 2 dimensions"):
            FF.dropout2d(torch.randn(5))
        with pytest.raises(RuntimeError, match="Feature dropout requires at least 2 dimensions"):
            torch.nn.functional.dropout2d(torch.randn(5))


@pytest.mark.parametrize("fn", [FF.dropout, FF.dropout1d, FF.dropout2d, FF.dropout3d])
def test_p_outside_unit_interval_is_a_value_error(fn):
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got"):
            fn(torch.randn(2, 3, 4, 5), p)


def test_modules_are_torch_drop_ins():
    for ours, theirs in [(fusedopt.nn.Dropout, torch.nn.Dropout), (fusedopt.nn.Dropout1d, torch.nn.Dropout1d),
                         (fusedopt.nn.Dropout2d, torch.nn.Dropout2d), (fusedopt.nn.Dropout3d, torch.nn.Dropout3d)]:
        m = ours(0.25, inplace=True)
        assert isinstance(m, theirs) and repr(m) == repr(theirs(0.25, inplace=True))
        with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
            ours(1.5)
    torch.manual_seed(1)
    y = fusedopt.nn.Dropout(0.5)(torch.ones(1000))
    assert set(y.unique().tolist()) <= {0.0, 2.0}


def test_op_errors_name_the_argument():
    x = torch.randn(10)
    with pytest.raises(RuntimeError, match="input must be a float32, float64, float16 or bfloat16"):
        ops.dropout(torch.arange(10), 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        ops.dropout(x, 1.5)
    with pytest.raises(ValueError, match="group_size"):
        ops.dropout(x, 0.5, 3)
    with pytest.raises(ValueError, match="offset must be a non-negative multiple of 4"):
        ops.dropout(x, 0.5, seed=1, offset=3)
    with pytest.raises(ValueError, match="offset is only meaningful with an explicit seed"):
        ops.dropout(x, 0.5, offset=4)
    _, mask = ops.dropout(x, 0.5)
    with pytest.raises(ValueError, match="mask has 2 bytes"):
        ops.dropout_backward(torch.randn(100), mask, 0.5)
    with pytest.raises(RuntimeError, match="mask must be a contiguous 1-d uint8"):
        ops.dropout_backward(x, mask.float(), 0.5)


_VARIANT_PROBE = """
import torch, fusedopt
out, mask = torch.ops.fusedopt.dropout(torch.arange(100003, dtype=torch.float32), 0.3, seed=77, offset=4)
print(fusedopt.cpu_capability()); print(int(mask.long().sum()), float(out.double().sum()))
"""


def test_every_cpu_variant_draws_the_same_mask():
    from fusedopt._build_info import BUILD_INFO
    order = ["DEFAULT", "AVX2", "AVX512"]
    best = torch.backends.cpu.get_cpu_capability()
    runs = set()
    for cap in BUILD_INFO["cpu_capabilities"]:
        if best in order and order.index(cap) > order.index(best):
            continue
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap.lower())
        proc = subprocess.run([sys.executable, "-c", _VARIANT_PROBE], capture_output=True, text=True, env=env,
                              cwd="/")
        assert proc.returncode == 0, proc.stderr
        name, values = proc.stdout.split("\n")[:2]
        assert name == cap
        runs.add(values)
    assert len(runs) == 1, runs


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_and_cuda_masks_are_identical(dtype):
    # The CUDA kernels move runs of 8 elements as aligned packs where the pointers allow it: storage
    # offset 1 takes the element-wise path, and odd sizes end in a short run.
    for n, g in [(1, 1), (70001, 1), (1 << 20, 1), (64 * 33, 33), (7 * 5, 5), (3 * 1001, 1001)]:
        for storage_offset in (0, 1):
            x = torch.randn(n, dtype=torch.float64).to(dtype)
            xg = torch.cat([x[:storage_offset], x]).cuda()[storage_offset:]
            out_c, mask_c = ops.dropout(x, 0.3, g, seed=2**63 - 25, offset=1 << 36)
            out_g, mask_g = ops.dropout(xg, 0.3, g, seed=2**63 - 25, offset=1 << 36)
            assert torch.equal(mask_c, mask_g.cpu())
            torch.testing.assert_close(out_g.cpu(), out_c, rtol=0, atol=0)
            inplace_g = xg.clone() if storage_offset == 0 else torch.cat([xg[:1], xg])[1:]
            assert torch.equal(ops.dropout_(inplace_g, 0.3, g, seed=2**63 - 25, offset=1 << 36).cpu(), mask_c)
            torch.testing.assert_close(inplace_g.cpu(), out_c, rtol=0, atol=0)
            grad = torch.randn(n, dtype=torch.float64).to(dtype)
            grad_g = torch.cat([grad[:storage_offset], grad]).cuda()[storage_offset:]
            torch.testing.assert_close(ops.dropout_backward(grad_g, mask_g, 0.3, g).cpu(),
                                       ops.dropout_backward(grad, mask_c, 0.3, g), rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_generator_reproduces_and_advances():
    x = torch.randn(10_000, device="cuda")
    torch.manual_seed(4)
    a1, a2 = FF.dropout(x, 0.5), FF.dropout(x, 0.5)
    torch.manual_seed(4)
    assert torch.equal(a1, FF.dropout(x, 0.5)) and not torch.equal(a1, a2)


# ---- edge cases against torch (its functional and modules directly) ---------------------------------

TORCH_AND_OURS = [(torch.nn.functional.dropout, FF.dropout), (torch.nn.functional.dropout1d, FF.dropout1d),
                  (torch.nn.functional.dropout2d, FF.dropout2d), (torch.nn.functional.dropout3d, FF.dropout3d)]


def _outcome(fn, x, *args, **kwargs):
    """What a call does, comparable between torch and us: the exception's type and message, or the
    result (shape, dtype, whether it is the input, its values for deterministic calls); the warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            y = fn(x, *args, **kwargs)
            result = (tuple(y.shape), y.dtype, y is x, y.detach().nan_to_num(7.0).tolist())
        except Exception as e:  # noqa: BLE001  (the point is to compare them)
            result = (type(e), str(e))
    return result, [str(w.message) for w in caught]


def test_nan_p_is_torchs_runtime_error():
    """torch's range check lets NaN through (comparisons with NaN are false) and ATen's then raises a
    RuntimeError, in training and evaluation alike, for every input, after the functional's own
    dimension checks and warnings; we raised a ValueError in training and nothing in evaluation."""
    nan = float("nan")
    for torch_fn, our_fn in TORCH_AND_OURS:
        for shape in [(), (5,), (0,), (3, 4), (2, 3, 4), (2, 3, 4, 5), (2, 0, 4, 5, 6), (2, 3, 4, 5, 6)]:
            for p in (nan, -nan, torch.tensor(nan)):
                for training, inplace in itertools.product((True, False), (False, True)):
                    x = torch.randn(shape)
                    a, b = x.clone(), x.clone()
                    ours = _outcome(our_fn, a, p, training, inplace)
                    assert ours == _outcome(torch_fn, b, p, training, inplace), (our_fn, shape, p, training)
                    assert ours[0][0] is RuntimeError  # the probability, or dropout1d's dimensions
                    assert torch.equal(a, x)  # (torch's dropout1d/3d leave an unbatched input unsqueezed)
    for torch_module, our_module in [(torch.nn.Dropout, fusedopt.nn.Dropout), (torch.nn.Dropout2d, fusedopt.nn.Dropout2d)]:
        for training in (True, False):
            x = torch.randn(2, 3, 4)
            theirs, ours = torch_module(nan).train(training), our_module(nan).train(training)
            assert _outcome(ours, x) == _outcome(theirs, x)
            assert _outcome(ours, x)[0][0] is RuntimeError


def test_p_one_needs_no_channels_as_in_torch():
    """At p = 1 torch multiplies by 0 before it looks for channels: dropout2d/3d of a 0-d or 1-d input
    is its zeros (NaN for inf), in place the input itself, differentiable, with the usual warnings."""
    torch_fns = {"dropout2d": torch.nn.functional.dropout2d, "dropout3d": torch.nn.functional.dropout3d}
    for name, our_fn in (("dropout2d", FF.dropout2d), ("dropout3d", FF.dropout3d)):
        for x in (torch.tensor(2.5), torch.tensor([1.0, float("inf"), -3.0]), torch.tensor([4.0], dtype=torch.float64)):
            for inplace in (False, True):
                a, b = x.clone(), x.clone()
                assert _outcome(our_fn, a, 1.0, True, inplace) == _outcome(torch_fns[name], b, 1.0, True, inplace)
                assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)) and a.shape == b.shape
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
                our_fn(a, 1.0).sum().backward()
                torch_fns[name](b, 1.0).sum().backward()
            assert torch.equal(a.grad, b.grad)
        # below p = 1 the shape still matters
        shape = (3,) if name == "dropout2d" else ()
        ours = _outcome(our_fn, torch.ones(shape), 0.5)
        assert ours == _outcome(torch_fns[name], torch.ones(shape), 0.5) and ours[0][0] is RuntimeError


def test_argument_types_are_torchs():
    """torch's _VF call takes `training` as a bool only and F.dropout's input as a Tensor only (a
    TypeError naming the ATen function), after the functional's own checks; we took any truthy value
    and returned a non-tensor input as it was."""
    import numpy as np

    for torch_fn, our_fn in TORCH_AND_OURS:
        shape = (2, 3, 4, 5, 6) if our_fn is FF.dropout3d else (2, 3, 4)
        for training in (None, 1, 0.0, "yes", np.bool_(True), torch.tensor(True)):
            for p in (0.0, 0.5, 1.0, float("nan")):
                for inplace in (False, True):
                    x = torch.ones(shape)
                    ours = _outcome(our_fn, x, p, training, inplace)
                    assert ours == _outcome(torch_fn, torch.ones(shape), p, training, inplace)
                    assert ours[0][0] is TypeError and torch.equal(x, torch.ones(shape))
    for bad in ([1.0, 2.0], 3.0, None, np.ones(3)):
        for inplace in (False, True):
            for p, training in ((0.5, True), (0.0, True), (0.5, False)):
                ours = _outcome(FF.dropout, bad, p, training, inplace)
                assert ours[0][0] is TypeError
                assert ours == _outcome(torch.nn.functional.dropout, bad, p, training, inplace)
    assert _outcome(FF.dropout, [1.0], 1.5) == _outcome(torch.nn.functional.dropout, [1.0], 1.5)  # range first


def test_inplace_on_a_leaf_that_requires_grad_raises_before_writing():
    """torch refuses an in-place dropout of a leaf that requires grad (or of a view of one) before
    writing; our op's autograd raised only after its kernel had dropped the leaf's values."""
    for torch_fn, our_fn in TORCH_AND_OURS:
        shape = (2, 3, 4, 5, 6) if our_fn is FF.dropout3d else (2, 3, 4)
        for p in (0.5, 1.0):
            for view in (False, True):
                x, y = torch.ones(shape, requires_grad=True), torch.ones(shape, requires_grad=True)
                a, b = (x[0], y[0]) if view else (x, y)
                ours = _outcome(our_fn, a, p, True, True)
                assert ours == _outcome(torch_fn, b, p, True, True) and ours[0][0] is RuntimeError
                assert torch.equal(x, torch.ones(shape)) and torch.equal(y, torch.ones(shape))
    with torch.no_grad():  # no grad recorded: written as torch writes it
        x = torch.ones(10, requires_grad=True)
        assert FF.dropout(x, 1.0, inplace=True) is x and torch.equal(x, torch.zeros(10))


def test_inplace_views_autograd_refuses_raise_before_writing():
    """torch's other in-place refusals (a view made in no-grad mode, an output of a multi-output view
    function), and the op called directly on a leaf: raised by the op's autograd kernel before the
    kernel writes, with torch's messages."""
    def no_grad_view(base):
        with torch.no_grad():
            return base[0]
    for make_view in (no_grad_view, lambda base: base.unbind(0)[0]):
        errors = []
        for fn in (torch.nn.functional.dropout, FF.dropout):
            base = torch.ones(4, 5, requires_grad=True).clone()
            with pytest.raises(RuntimeError) as info:
                fn(make_view(base), 0.5, inplace=True)
            errors.append(str(info.value))
            assert torch.equal(base.detach(), torch.ones(4, 5))
        assert errors[0] == errors[1]
    leaf = torch.ones(4, 5, requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        ops.dropout_(leaf, 0.5)
    assert torch.equal(leaf.detach(), torch.ones(4, 5))


def test_unbatched_inplace_errors_leave_the_input_as_it_was():
    """A torch bug we keep out: torch's dropout1d/dropout3d take an unbatched input in place by
    unsqueeze_ on the input itself, so an error after it (a NaN p, a 0-d input to dropout3d, a bad
    `training`) leaves the caller's tensor with an extra dimension, and unsqueeze_ refuses a leaf
    that requires grad even where nothing would be written (evaluation, p = 0). Ours raises the same
    errors with the input untouched, and returns such a leaf as it is."""
    cases = [(FF.dropout1d, torch.nn.functional.dropout1d, (3, 4), (float("nan"), True)),
             (FF.dropout3d, torch.nn.functional.dropout3d, (2, 3, 4, 5), (float("nan"), False)),
             (FF.dropout3d, torch.nn.functional.dropout3d, (), (0.5, True)),
             (FF.dropout3d, torch.nn.functional.dropout3d, (2, 3, 4, 5), (0.5, None))]
    for our_fn, torch_fn, shape, (p, training) in cases:
        x, y = torch.ones(shape), torch.ones(shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as theirs:
                torch_fn(y, p, training, True)
            with pytest.raises(theirs.type, match=f"^{re.escape(str(theirs.value))}$"):
                our_fn(x, p, training, True)
        assert y.shape == (1,) + shape  # torch: left unsqueezed
        assert x.shape == shape and torch.equal(x, torch.ones(shape))
    for our_fn, torch_fn, shape in [(FF.dropout1d, torch.nn.functional.dropout1d, (3, 4)),
                                    (FF.dropout3d, torch.nn.functional.dropout3d, (2, 3, 4, 5))]:
        for p, training in ((0.5, False), (0.0, True)):
            x = torch.ones(shape, requires_grad=True)
            with pytest.raises(RuntimeError, match="a leaf Variable that requires grad"):
                torch_fn(x, p, training, True)
            assert our_fn(x, p, training, True) is x and x.shape == shape


# ---- layouts: the output keeps the input's layout, as torch's does ---------------------------------
def _layouts(shape):
    """(name, tensor) of shape in many layouts: contiguous, every dim reversed, channels-last (channel
    innermost), channel before batch (groups neither runs nor channel rows), gaps, storage offset 1."""
    base = torch.rand(shape, dtype=torch.float64) + 0.5
    dims = len(shape)
    out = [("contiguous", base)]
    if dims >= 2:
        rev = list(range(dims - 1, -1, -1))
        out.append(("reversed", base.permute(rev).contiguous().permute(rev)))
        out.append(("batch inner", base.transpose(0, 1).contiguous().transpose(0, 1)))
    if dims >= 3:
        perm = [0, *range(2, dims), 1]
        out.append(("channels last", base.permute(perm).contiguous().permute([perm.index(d) for d in range(dims)])))
    wide = torch.rand(*shape[:-1], 2 * shape[-1], dtype=torch.float64) + 0.5
    out.append(("gaps", wide[..., ::2]))
    out.append(("offset 1", torch.cat([base.reshape(-1)[:1], base.reshape(-1)]).narrow(0, 1, base.numel()).view(shape)))
    return out


def _copies(t):
    """aten::copy_ calls (layout conversions) seen by the profiler while running t()."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t()
    return sum(e.count for e in prof.key_averages() if e.key in ("aten::copy_", "aten::clone", "aten::contiguous"))


@pytest.mark.parametrize("fn,shape", [
    (FF.dropout, (5, 7)), (FF.dropout, (3, 4, 5, 6)), (FF.dropout1d, (3, 6, 7)), (FF.dropout2d, (3, 6, 5, 4)),
    (FF.dropout2d, (2, 9, 1, 5)), (FF.dropout3d, (2, 5, 3, 2, 4))])
@pytest.mark.parametrize("inplace", [False, True])
def test_output_keeps_the_input_layout_as_torch(fn, shape, inplace):
    torch_fn = getattr(torch.nn.functional, fn.__name__)
    channel_wise = fn is not FF.dropout
    for name, x in _layouts(shape):
        x0 = x.clone()
        target = x.clone() if not inplace else x
        torch.manual_seed(3)
        out = fn(target, 0.5, inplace=inplace)
        expected_strides = torch_fn(x0.clone() if inplace else x, 0.5, inplace=inplace).stride()
        if inplace:
            assert out is target and out.stride() == x.stride(), name
        else:
            assert out.stride() == expected_strides, (name, out.stride(), expected_strides)
        kept = out != 0
        torch.testing.assert_close(out[kept], x0[kept] * 2, rtol=0, atol=0)
        assert 0 < kept.sum() < kept.numel(), name
        if channel_wise:  # whole channels: every (n, c) all kept or all dropped
            per_channel = kept.reshape(shape[0] * shape[1], -1)
            assert (per_channel.all(1) | ~per_channel.any(1)).all(), name


@pytest.mark.parametrize("group_dims", [None, 2])
def test_masks_in_every_layout(group_dims):
    """Element-wise masks follow the output's memory order; channel-wise ones are the same as for the
    contiguous input whatever the layout (same seed), and so are the values."""
    shape = (3, 6, 5, 4)
    group_size = 1 if group_dims is None else math.prod(shape[group_dims:])
    for name, x in _layouts(shape):
        out, mask = ops.dropout(x, 0.4, group_size, seed=11, keep_layout=True)
        assert out.stride() == torch.empty_like(x).stride(), name
        ref_out, ref_mask = ops.dropout(x.contiguous(), 0.4, group_size, seed=11)
        if group_size > 1:
            assert torch.equal(mask, ref_mask) and torch.equal(out, ref_out), name
            continue
        # Bit k belongs to the output's k-th element in memory.
        flat = torch.as_strided(out, (out.numel(),), (1,), out.storage_offset())
        flat_x = torch.as_strided(torch.empty_like(x).copy_(x), (x.numel(),), (1,))
        keep = unpack(mask, x.numel())
        assert torch.equal(keep, reference_keep(x.numel(), 0.4, 11)), name
        torch.testing.assert_close(flat, torch.where(keep, flat_x / 0.6, flat_x * 0), rtol=0, atol=0)


@pytest.mark.parametrize("fn,shape", [(FF.dropout, (4, 8, 6, 5)), (FF.dropout2d, (4, 8, 6, 5)),
                                      (FF.dropout1d, (4, 8, 30))])
def test_backward_in_every_layout(fn, shape):
    """The gradient is grad_output times the forward's factors, for grads of any layout, and is laid
    out like the forward's output."""
    for name, x in _layouts(shape):
        x = x.detach().requires_grad_(True)
        torch.manual_seed(1)
        out = fn(x, 0.3)
        factors = out.detach() / x.detach()
        for grad_name, grad in _layouts(shape):
            (gx,) = torch.autograd.grad(out, x, grad, retain_graph=True)
            torch.testing.assert_close(gx, grad * factors, rtol=0, atol=1e-15, msg=f"{name}, grad {grad_name}")
            assert gx.stride() == out.stride(), (name, grad_name)
        (gx,) = torch.autograd.grad(out.sum(), x)  # an expanded (stride 0) grad
        torch.testing.assert_close(gx, factors, rtol=0, atol=1e-15)


def test_no_layout_copies_for_channels_last_and_transposed_inputs():
    """The kernels read channels-last, channel-innermost and transposed inputs where they are: neither
    forward nor backward copies them into another layout."""
    x4 = torch.randn(4, 16, 6, 5).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x5 = torch.randn(2, 8, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d).requires_grad_(True)
    x3 = torch.randn(4, 30, 16).transpose(1, 2).requires_grad_(True)  # (N, C, L), channel innermost
    xt = torch.randn(40, 30).t().requires_grad_(True)
    for fn, x in [(FF.dropout2d, x4), (FF.dropout, x4), (FF.dropout3d, x5), (FF.dropout1d, x3), (FF.dropout, xt)]:
        holder = {}
        assert _copies(lambda: holder.setdefault("out", fn(x, 0.5))) == 0, fn.__name__
        out = holder["out"]
        assert out.stride() == x.stride()
        grad = torch.randn_like(out)  # laid out like out
        assert _copies(lambda: torch.autograd.grad(out, x, grad)) == 0, fn.__name__
        target = x.detach().clone()
        assert _copies(lambda: fn(target, 0.5, inplace=True)) == 0, fn.__name__


def test_gradcheck_and_opcheck_with_kept_layouts():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    for group_size in (1, 20):
        def f(t):
            return ops.dropout(t, 0.3, group_size, seed=5, keep_layout=True)[0]
        assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(True),))
        assert torch.autograd.gradgradcheck(f, (x.clone().requires_grad_(True),))
        torch.library.opcheck(ops.dropout.default, (x, 0.3, group_size), dict(seed=5, keep_layout=True))
        torch.library.opcheck(ops.dropout_.default, (x.clone(), 0.3, group_size), dict(seed=5, keep_layout=True))
        _, mask = ops.dropout(x, 0.3, group_size, seed=5, keep_layout=True)
        for grad in (torch.randn_like(x), torch.randn(2, 3, 4, 5, dtype=torch.float64)):
            torch.library.opcheck(ops.dropout_backward.default, (grad, mask, 0.3, group_size),
                                  dict(output_strides=list(x.stride())))


def test_backward_output_strides_are_checked():
    g = torch.randn(2, 3, 4)
    _, mask = ops.dropout(g, 0.5, seed=1, keep_layout=True)
    with pytest.raises(ValueError, match="output_strides has 2 entries but grad_output has 3 dimensions"):
        ops.dropout_backward(g, mask, 0.5, output_strides=[12, 4])
    with pytest.raises(ValueError, match="not those of a dense tensor of shape"):
        ops.dropout_backward(g, mask, 0.5, output_strides=[12, 4, 2])
    with pytest.raises(ValueError, match="must be non-negative"):
        ops.dropout_backward(g, mask, 0.5, output_strides=[12, -4, 1])


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_and_cuda_agree_in_every_layout(dtype):
    """keep_layout on CUDA: same strides, masks and values as on CPU, forward, in place and backward
    (the channel-innermost apply kernel included)."""
    for shape in [(3, 6, 5, 4), (2, 33, 7, 3), (4, 5, 9)]:
        for group_size in (1, math.prod(shape[2:])):
            for name, x in _layouts(shape):
                x = x.to(dtype)
                if name == "gaps":
                    xg = torch.empty(*shape[:-1], 2 * shape[-1], dtype=dtype, device="cuda")[..., ::2].copy_(x)
                elif name == "offset 1":  # the element-wise (unpacked) path of the kernels
                    flat = x.reshape(-1).cuda()
                    xg = torch.cat([flat[:1], flat]).narrow(0, 1, x.numel()).view(shape)
                else:
                    xg = torch.empty_like(x, device="cuda").copy_(x)  # x's strides
                out_c, mask_c = ops.dropout(x, 0.3, group_size, seed=77, keep_layout=True)
                out_g, mask_g = ops.dropout(xg, 0.3, group_size, seed=77, keep_layout=True)
                assert out_g.stride() == out_c.stride(), name
                assert torch.equal(mask_g.cpu(), mask_c), name
                torch.testing.assert_close(out_g.cpu(), out_c, rtol=0, atol=0)
                inplace_g = xg.clone()
                assert torch.equal(ops.dropout_(inplace_g, 0.3, group_size, seed=77, keep_layout=True).cpu(), mask_c)
                torch.testing.assert_close(inplace_g.cpu(), out_c, rtol=0, atol=0)
                grad = torch.randn(shape, dtype=torch.float64).to(dtype)
                strides = list(out_c.stride())
                torch.testing.assert_close(
                    ops.dropout_backward(grad.cuda(), mask_g, 0.3, group_size, output_strides=strides).cpu(),
                    ops.dropout_backward(grad, mask_c, 0.3, group_size, output_strides=strides), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool, torch.complex64])
@pytest.mark.parametrize("fn", ["dropout", "dropout1d", "dropout2d", "dropout3d"])
@pytest.mark.parametrize("inplace", [False, True])
def test_p_one_on_other_dtypes_gives_zeros_as_torch(dtype, fn, inplace):
    """torch drops everything as input * 0 at p = 1, before it looks at the dtype: zeros of the input's
    dtype; for 0 < p < 1 such inputs are an error there and here."""
    shape = {"dropout": (3, 4), "dropout1d": (2, 3, 4), "dropout2d": (2, 3, 4, 2), "dropout3d": (2, 3, 2, 2, 2)}[fn]
    x = torch.ones(shape, dtype=dtype)
    ours_in, torch_in = x.clone(), x.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = getattr(FF, fn)(ours_in, 1.0, inplace=inplace)
        expected = getattr(torch.nn.functional, fn)(torch_in, 1.0, inplace=inplace)
        assert ours.dtype == expected.dtype == dtype and torch.equal(ours, expected) and not ours.any()
        assert (ours is ours_in) == (expected is torch_in) and torch.equal(ours_in, torch_in)
        with pytest.raises((RuntimeError, NotImplementedError)):
            getattr(torch.nn.functional, fn)(x.clone(), 0.5)
        with pytest.raises(RuntimeError, match="input must be a float32"):
            getattr(FF, fn)(x.clone(), 0.5)


def test_p_one_on_a_sparse_input_gives_zeros():
    """A torch bug kept out: torch 2.13's dropout of a sparse COO input at p = 1 multiplies it by a
    sparse 0-dim zeros tensor and returns values that are not zeros (uninitialised, ~1e29 here).
    Ours is input * 0: a sparse tensor of zeros, as the documented input * 0 means."""
    x = torch.randn(4, 5).to_sparse()
    for inplace in (False, True):
        target = x.clone()
        ours = FF.dropout(target, 1.0, inplace=inplace)
        assert (ours is target) == inplace
        assert ours.layout == torch.sparse_coo and ours.shape == x.shape and not ours.to_dense().any()
    assert torch.nn.functional.dropout(x, 1.0).layout == torch.sparse_coo


@pytest.mark.parametrize("fn", ["dropout", "dropout1d", "dropout2d", "dropout3d"])
def test_forward_ad_and_torch_func_use_torchs_dropout(fn):
    """Our autograd (a C++ autograd Function) has no forward-mode rule and cannot be transformed by
    torch.func, so under either the functionals run torch's own dropout: same RNG state, same mask as
    torch's. The op itself raises on an input with a tangent instead of dropping it."""
    import torch.autograd.forward_ad as fwAD

    ours, ref = getattr(FF, fn), getattr(torch.nn.functional, fn)
    shape = {"dropout": (6, 7), "dropout1d": (3, 4, 5), "dropout2d": (2, 3, 4, 5), "dropout3d": (2, 3, 2, 2, 3)}[fn]
    x = torch.rand(shape) + 0.5
    t = torch.randn(shape)
    torch.manual_seed(3)
    expected = ref(x, 0.4)
    torch.manual_seed(3)
    grad = torch.func.grad(lambda x: ours(x, 0.4).sum())(x)
    torch.testing.assert_close(grad, expected / x)
    with fwAD.dual_level():
        torch.manual_seed(3)
        out = ours(fwAD.make_dual(x, t), 0.4)
        primal, tangent = fwAD.unpack_dual(out)
        torch.testing.assert_close(primal, expected)
        torch.testing.assert_close(tangent, t * expected / x)
        with pytest.raises(NotImplementedError, match="fusedopt::dropout: forward-mode AD is not supported"):
            torch.ops.fusedopt.dropout(fwAD.make_dual(x, t), 0.4)
