"""The CPU output cache: where fusedopt's large CPU outputs come from.

BatchNorm (forward and backward) and dropout return tensors as large as their inputs. On CPU, those of
at least 32 MiB come from a cache of huge-page memory blocks that keeps freed blocks for reuse, up to
a limit (512 MiB by default; ``$FUSEDOPT_CPU_OUTPUT_CACHE_MB`` sets it in MiB, 0 turns the cache
off). glibc maps every allocation of that size afresh and unmaps it on free, so without the cache each
such output is faulted in and zeroed by the OS on every call, which for BatchNorm on
64x64x56x56 float32 costs more than the kernel itself. The cache keeps only freed blocks; tensors in
use are not counted. Smaller outputs, and CUDA tensors, use torch's allocators as usual.
"""

from __future__ import annotations

from . import _C

__all__ = ["cache_stats", "release_cache", "set_cache_limit"]


def cache_stats() -> dict:
    """``{"cached_bytes", "cached_blocks", "limit_bytes", "reuses"}``: the freed blocks kept now, the
    limit, and how many allocations the cache has served since the process started."""
    return dict(_C.output_cache_stats())


def release_cache() -> int:
    """Return every freed block kept by the cache to the OS; returns the number of bytes released."""
    return int(_C.release_output_cache())


def set_cache_limit(limit_bytes: int) -> None:
    """Keep at most ``limit_bytes`` of freed blocks (0: keep none, i.e. turn the cache off for new
    allocations); blocks over a lowered limit are released."""
    if not isinstance(limit_bytes, int) or isinstance(limit_bytes, bool) or limit_bytes < 0:
        raise ValueError(f"set_cache_limit: limit_bytes must be an int >= 0, got {limit_bytes!r}")
    _C.set_output_cache_limit(limit_bytes)
