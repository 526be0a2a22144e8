"""BatchNorm benchmarks: fusedopt.nn.BatchNorm2d against torch.nn.BatchNorm2d, eager and
torch.compile'd (the module compiled), training mode, forward and forward+backward, on ResNet-50's BatchNorm shapes, contiguous and channels_last, in the run's dtype
and (for a float32 run) bfloat16 too.

Bytes model (the minimum for a one-pass statistics algorithm): forward reads x for the statistics and
again to write y (3 tensor passes); backward reads dy and x for the two sums, then dy and x again to
write grad_input (5 passes): forward+backward = 8 passes of the input's size."""

from __future__ import annotations

import torch

import fusedopt
import harness
from harness import Case, Variant, warmed

# ResNet-50 BatchNorm2d inputs (channels, spatial), one per stage; the batch size depends on the device.
RESNET50 = [(64, 112), (256, 56), (512, 28), (1024, 14), (2048, 7)]
# The CPU goal of the issue: BatchNorm2d forward+backward on 64x64x56x56 float32.
CPU_GOAL = (64, 64, 56, 56)


def _setup(module_cls, shape, dtype, device, memory_format, backward, compile_module=False):
    def setup():
        g = torch.Generator().manual_seed(0)
        m = module_cls(shape[1]).to(device).train()
        if compile_module:
            m = torch.compile(m)
        x = torch.randn(shape, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=memory_format)
        if not backward:
            fn = lambda: m(x)  # noqa: E731
        else:
            x.requires_grad_()
            dy = torch.randn(shape, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=memory_format)

            def fn():
                x.grad = None
                m(x).backward(dy)
        return warmed(fn) if compile_module else fn
    return setup


def batchnorm_cases(device: str, dtype: torch.dtype, _param_sets) -> list[Case]:
    quick = harness.OPTIONS.quick
    cuda = device.startswith("cuda")
    if quick:
        shapes = [(2, 64, 14, 14), (2, 256, 7, 7)]
    else:
        batch = 32 if cuda else 8
        shapes = [(batch, c, s, s) for c, s in RESNET50]
        if not cuda:
            shapes.insert(0, CPU_GOAL)
    dtypes = [dtype] + ([torch.bfloat16] if dtype == torch.float32 else [])
    cases = []
    for dt in dtypes:
        for shape in shapes:
            numel = shape[0] * shape[1] * shape[2] * shape[3]
            for fmt_name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
                for backward in (False, True):
                    if shape == CPU_GOAL and (dt != torch.float32 or fmt_name != "contiguous"):
                        continue
                    passes = 8 if backward else 3
                    name = f"{'fwd+bwd' if backward else 'fwd'} {'x'.join(map(str, shape))} {fmt_name}"
                    variants = [Variant("torch", _setup(torch.nn.BatchNorm2d, shape, dt, device, fmt, backward), True)]
                    if harness.OPTIONS.compile:
                        variants.append(Variant(
                            "torch compiled", _setup(torch.nn.BatchNorm2d, shape, dt, device, fmt, backward, True),
                            is_torch=True, compiled=True))
                    variants.append(Variant("fusedopt", _setup(fusedopt.nn.BatchNorm2d, shape, dt, device, fmt, backward)))
                    cases.append(Case("batchnorm", name, device, str(dt).replace("torch.", ""), numel, 1,
                                      passes * numel * dt.itemsize, variants))
    return cases


GROUPS = {"batchnorm": batchnorm_cases}
