"""fusedopt.nn.SyncBatchNorm across 2 processes (gloo, CPU) against one process on the global batch."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fusedopt.nn as fnn

pytestmark = pytest.mark.distributed

WORLD = 2
# (name, global shape, per-rank batch sizes, memory format, dtype, steps, module kwargs)
CASES = [
    ("even-2d", (6, 5, 4, 3), [3, 3], torch.contiguous_format, torch.float32, 2, {}),
    ("uneven-2d", (8, 5, 4, 3), [3, 5], torch.contiguous_format, torch.float32, 2, {}),
    ("uneven-channels-last", (7, 19, 3, 5), [5, 2], torch.channels_last, torch.float32, 2, dict(momentum=None)),
    ("uneven-1d-float64", (5, 6), [1, 4], torch.contiguous_format, torch.float64, 2, {}),
    ("empty-rank-3d", (4, 3, 2, 3, 2), [0, 4], torch.contiguous_format, torch.float32, 1, dict(affine=True)),
    ("bf16", (6, 8, 3, 3), [2, 4], torch.contiguous_format, torch.bfloat16, 1, {}),
]


def _data(shape, dtype, steps, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(shape, generator=g, dtype=torch.float64).mul(2).add(3).to(dtype) for _ in range(steps)]
    dys = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for _ in range(steps)]
    return xs, dys


def _module(shape, kwargs, dtype):
    cls = {2: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}[len(shape)]
    torch.manual_seed(0)
    m = cls(shape[1], **kwargs)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-1, 1)
    return m.to(torch.float64 if dtype == torch.float64 else torch.float32)


def _worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    results = {}
    for name, shape, sizes, fmt, dtype, steps, kwargs in CASES:
        model = fnn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(_module(shape, kwargs, dtype)))
        xs, dys = _data(shape, dtype, steps, seed=len(name))
        start, stop = sum(sizes[:rank]), sum(sizes[:rank + 1])
        outs, grads = [], []
        for x, dy in zip(xs, dys):
            model.zero_grad()
            xr = x[start:stop].contiguous(memory_format=fmt).requires_grad_()
            out = model(xr)
            out.backward(dy[start:stop])
            outs.append(out.detach())
            grads.append(xr.grad)
        bn = model[0]
        results[name] = dict(outs=outs, grads=grads, running_mean=bn.running_mean, running_var=bn.running_var,
                             num_batches_tracked=bn.num_batches_tracked, grad_weight=bn.weight.grad,
                             grad_bias=bn.bias.grad)
    # One value per channel in the global batch raises on every rank (each holds at most one value, so
    # each reads the global count); one value on each of two ranks is a global batch of two.
    errors = {}
    for label, per_rank in GLOBAL_BATCH_CASES.items():
        torch.manual_seed(rank)
        try:
            fnn.SyncBatchNorm(3)(torch.randn(per_rank[rank], 3))
            errors[label] = None
        except ValueError as e:
            errors[label] = str(e)
    results["errors"] = errors
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]


GLOBAL_BATCH_CASES = {"one value": [1, 0], "two values": [1, 1]}


def test_a_global_batch_of_one_value_raises_on_every_rank(rank_results):
    for r in rank_results:
        assert "Expected more than 1 value per channel" in (r["errors"]["one value"] or "")
        assert r["errors"]["two values"] is None


TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12),
       torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_single_process_on_global_batch(case, rank_results):
    name, shape, sizes, fmt, dtype, steps, kwargs = case
    ref = _module(shape, kwargs, dtype)
    xs, dys = _data(shape, dtype, steps, seed=len(name))
    tol = TOL[dtype]
    for step, (x, dy) in enumerate(zip(xs, dys)):
        ref.zero_grad()
        xg = (x.float() if dtype == torch.bfloat16 else x).requires_grad_()
        out = ref(xg)
        out.backward(dy.to(out.dtype))
        ours_out = torch.cat([r[name]["outs"][step] for r in rank_results])
        ours_grad = torch.cat([r[name]["grads"][step] for r in rank_results])
        torch.testing.assert_close(ours_out.double(), out.to(dtype).double(), **tol)
        torch.testing.assert_close(ours_grad.double(), xg.grad.to(dtype).double(), **tol)
    ptol = TOL[torch.float64] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    if dtype == torch.bfloat16:
        ptol = dict(rtol=1e-2, atol=1e-2)
    for r in rank_results:
        torch.testing.assert_close(r[name]["running_mean"], ref.running_mean, **ptol)
        torch.testing.assert_close(r[name]["running_var"], ref.running_var, **ptol)
        assert int(r[name]["num_batches_tracked"]) == int(ref.num_batches_tracked)
    # weight/bias grads are per rank (DDP sums them); their sum is the global batch's.
    torch.testing.assert_close(sum(r[name]["grad_weight"] for r in rank_results), ref.weight.grad, **ptol)
    torch.testing.assert_close(sum(r[name]["grad_bias"] for r in rank_results), ref.bias.grad, **ptol)
