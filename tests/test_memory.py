"""The CPU output cache (fusedopt.memory, csrc/common/large_outputs.cpp): BatchNorm and dropout outputs
of at least 32 MiB come from reused huge-page blocks. Values are checked against torch at that size;
the cache's reuse, limit, release and environment switch are checked through its counters and the
outputs' data pointers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fusedopt
import fusedopt.nn as fnn
from fusedopt import memory

LARGE = (8, 64, 128, 128)  # 33.5 MB of float32: over the 32 MiB threshold
SMALL = (8, 64, 32, 32)


@pytest.fixture(autouse=True)
def _fresh_cache():
    limit = memory.cache_stats()["limit_bytes"]
    memory.release_cache()
    yield
    memory.set_cache_limit(limit)
    memory.release_cache()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_large_batch_norm_matches_torch_and_reuses_its_blocks(layout):
    gen = torch.Generator().manual_seed(5)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(LARGE, generator=gen).to(memory_format=fmt)
    gy = torch.randn(LARGE, generator=gen).to(memory_format=fmt)
    ref, ours = torch.nn.BatchNorm2d(64), fnn.BatchNorm2d(64)
    reuses = memory.cache_stats()["reuses"]
    pointers = set()
    for step in range(3):
        xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        yr, yo = ref(xr), ours(xo)
        assert yo.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(yo, yr, rtol=1e-5, atol=1e-5)
        yr.backward(gy)
        yo.backward(gy)
        torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-4, atol=1e-5)
        pointers.update((yo.data_ptr(), xo.grad.data_ptr()))
        del yr, yo, xr, xo
    # Step 1 maps two blocks (output, grad input); steps 2 and 3 reuse them.
    assert len(pointers) == 2
    assert memory.cache_stats()["reuses"] - reuses == 4
    assert memory.cache_stats()["cached_blocks"] == 2


def test_large_dropout_outputs_come_from_the_cache():
    x = torch.randn(LARGE)
    y, mask = torch.ops.fusedopt.dropout(x, 0.25, 8, seed=1234, offset=0)
    ptr = y.data_ptr()
    del y
    assert memory.cache_stats()["cached_blocks"] == 1
    y2, mask2 = torch.ops.fusedopt.dropout(x, 0.25, 8, seed=1234, offset=0)
    assert y2.data_ptr() == ptr and torch.equal(mask, mask2)
    kept = (y2 != 0)
    torch.testing.assert_close(y2[kept], x[kept] / 0.75)


def test_small_outputs_and_a_zero_limit_bypass_the_cache():
    m = fnn.BatchNorm2d(64)
    y = m(torch.randn(SMALL))
    del y
    assert memory.cache_stats()["cached_blocks"] == 0
    memory.set_cache_limit(0)
    y = m(torch.randn(LARGE))
    del y
    assert memory.cache_stats()["cached_blocks"] == 0


def test_limit_release_and_live_tensors():
    m = fnn.BatchNorm2d(64)
    x = torch.randn(LARGE)
    a, b = m(x), m(x)
    block = a.untyped_storage().nbytes()
    memory.set_cache_limit(block + block // 2)  # room for one freed block
    del a, b
    stats = memory.cache_stats()
    assert stats["cached_blocks"] == 1 and stats["cached_bytes"] >= block
    live = m(x)  # takes the cached block
    expected = live.clone()
    assert memory.cache_stats()["cached_blocks"] == 0
    del live
    released = memory.release_cache()
    assert released >= block and memory.cache_stats()["cached_bytes"] == 0
    # Releasing never touches tensors in use, and storages from the cache resize like any other.
    kept = m(x)
    memory.release_cache()
    torch.testing.assert_close(kept, expected)
    kept = kept.detach()
    n = kept.numel()
    kept.resize_(2 * n)
    torch.testing.assert_close(kept[:n].view_as(expected), expected)
    with pytest.raises(ValueError, match="limit_bytes"):
        memory.set_cache_limit(-1)


def _run(code: str, env_value: str, cwd) -> subprocess.CompletedProcess:
    # Run outside the source tree, so that the installed fusedopt is imported.
    env = dict(os.environ, FUSEDOPT_CPU_OUTPUT_CACHE_MB=env_value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_environment_variable_sets_the_limit(tmp_path):
    code = ("import torch, fusedopt; y = fusedopt.nn.BatchNorm2d(64)(torch.randn(8, 64, 128, 128)); "
            "del y; print(fusedopt.memory.cache_stats())")
    off = _run(code, "0", tmp_path)
    assert off.returncode == 0, off.stderr
    assert "'limit_bytes': 0" in off.stdout and "'cached_blocks': 0" in off.stdout
    small = _run(code, "64", tmp_path)
    assert small.returncode == 0, small.stderr
    assert f"'limit_bytes': {64 << 20}" in small.stdout and "'cached_blocks': 1" in small.stdout
    bad = _run(code, "lots", tmp_path)
    assert bad.returncode != 0 and "FUSEDOPT_CPU_OUTPUT_CACHE_MB" in bad.stderr
