"""Parameter sets the benchmarks update, built in code (no downloads)."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class ParamSet:
    name: str
    shapes: tuple[tuple[int, ...], ...]

    @property
    def numel(self) -> int:
        total = 0
        for s in self.shapes:
            n = 1
            for d in s:
                n *= d
            total += n
        return total

    @property
    def count(self) -> int:
        return len(self.shapes)

    def make(self, device: str, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in self.shapes]


def equal_split(total: int, count: int) -> ParamSet:
    """`count` tensors of total/count elements each (the tensor-count sweep at fixed total size)."""
    per = max(1, total // count)
    return ParamSet(f"{count} x {_human(per)}", tuple((per,) for _ in range(count)))


def _human(n: int) -> str:
    for unit, size in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def standard_sets(quick: bool, device: str = "cpu") -> list[ParamSet]:
    """One set of few large tensors and one of many small ones, 16M parameters each (1M in quick);
    on GPUs also one flat 256M-parameter tensor, large enough for memory bandwidth to dominate."""
    total = (1 << 20) if quick else (16 << 20)
    sets = [equal_split(total, 16), equal_split(total, 2000 if not quick else 200)]
    if device.startswith("cuda") and not quick:
        sets.append(equal_split(256 << 20, 1))
    return sets
