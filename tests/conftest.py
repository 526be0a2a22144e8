"""Shared test helpers: devices, per-dtype tolerances, and parameter zoos with awkward layouts."""

from __future__ import annotations

import os

import pytest
import torch

import fusedopt  # loads the extension and registers the ops
import fusedopt._extension

HAS_CUDA = torch.cuda.is_available()


def pytest_report_header(config):
    return f"fusedopt CPU kernel variant: {fusedopt._extension.cpu_capability()}"


def pytest_configure(config):
    # `make test-cpu-variants` runs the kernel tests under ATEN_CPU_CAPABILITY=avx2/default: make sure that
    # variant is the one running (a build without it would silently test another).
    wanted = os.environ.get("ATEN_CPU_CAPABILITY")
    if wanted and wanted.upper() in ("DEFAULT", "AVX2", "AVX512"):
        running = fusedopt._extension.cpu_capability()
        if running != wanted.upper():
            raise pytest.UsageError(f"ATEN_CPU_CAPABILITY={wanted}, but fusedopt runs its {running} kernels")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                              pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")])]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# Tolerances for comparing against the reference after many steps, per dtype:
# float32: a few ulps per step (fma placement differs between torch's kernels and ours);
# float64: rounding only; float16/bfloat16: two ulps of the stored type (2e-3 ~ 2 * 2**-10, 1.6e-2 ~
# 2 * 2**-7): both sides compute in float32 and round to the stored type once per step, and a value
# near a rounding boundary can land one ulp apart.
TOL = {
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-14),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}

# Shapes that exercise every code path: 0-dim, empty, odd sizes shorter and longer than one SIMD
# register or CUDA vector, and sizes that span several threads / CUDA chunks.
SHAPES = [(), (0,), (1,), (3,), (7,), (16,), (33,), (3, 5, 7), (257,), (64, 33), (4, 3, 5, 5), (70001,)]


def make_tensor(shape, dtype, device, layout="contiguous", generator=None):
    """A random tensor of shape in one of several memory layouts:
    contiguous; offset (storage offset of one element, which breaks 16-byte alignment);
    channels_last (4-d only); transposed (2-d only, dense but not contiguous)."""
    def rand(*s):
        return torch.randn(tuple(s), dtype=torch.float64, generator=generator).to(dtype=dtype, device=device)
    n = 1
    for s in shape:
        n *= s
    if layout == "offset":
        return rand(n + 1)[1:].view(shape)
    if layout == "channels_last" and len(shape) == 4:
        return rand(*shape).contiguous(memory_format=torch.channels_last)
    if layout == "transposed" and len(shape) == 2:
        return rand(shape[1], shape[0]).t()
    return rand(*shape)


def param_zoo(dtype, device, seed=0):
    """One tensor per (shape, layout) that makes sense for it."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in SHAPES:
        layouts = ["contiguous", "offset"]
        if len(shape) == 4:
            layouts.append("channels_last")
        if len(shape) == 2:
            layouts.append("transposed")
        for layout in layouts:
            out.append(make_tensor(shape, dtype, device, layout, g))
    return out


def assert_close(actual, expected, dtype, msg=""):
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), **TOL[dtype], msg=msg)
