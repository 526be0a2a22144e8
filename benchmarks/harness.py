"""Timing, bandwidth and reporting for the fusedopt benchmarks.

A benchmark is a list of ``Case`` objects. Each case names a workload and holds several ``Variant``s
(torch's for-loop, foreach and fused paths, torch.compile'd torch, fusedopt, ...) that do the same
work; every variant is timed in the same run, and each result reports its ratio to the fastest torch
variant of its case and its achieved bandwidth from the case's bytes-moved model, also as a fraction of
this machine's copy bandwidth measured in the same run.

A variant whose setup fails for a known reason (``Skipped``, or any error of a ``compiled`` variant:
torch.compile failing for a case) is not timed; it is recorded as skipped with its reason, printed
after the table and kept under the run's ``"skipped"`` key in results.jsonl (results.csv holds timed
rows only, so its columns never change).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch


@dataclasses.dataclass
class RunOptions:
    """Options of the current run that case builders may read (set by run.py)."""
    quick: bool = False
    # Whether to add the torch.compile'd torch variants (run.py: on unless --quick or --no-compile).
    compile: bool = True
    # Inductor's compile time grows with the number of tensors a foreach op touches (minutes for a few
    # hundred on a 2-core CPU): compiled variants over more tensors are skipped, with that reason.
    compile_max_tensors: int = 256


OPTIONS = RunOptions()


class Skipped(Exception):
    """Raised by a variant's setup when the variant cannot run here; the message is the reason."""


@dataclasses.dataclass
class Variant:
    name: str
    # Builds the state to time (fresh params/optimizer) and returns the function to call per rep.
    setup: Callable[[], Callable[[], None]]
    # The torch reference paths, against whose fastest the speed-up is reported.
    is_torch: bool = False
    # A torch.compile'd variant: its setup compiles and warms up (compile time is not timed), and any
    # error there (torch.compile failing for this case) skips the variant instead of ending the run.
    compiled: bool = False


@dataclasses.dataclass
class Case:
    group: str  # e.g. "sgd"
    name: str  # e.g. "momentum, 16 x 1M"
    device: str
    dtype: str
    numel: int  # elements updated per call
    tensors: int
    bytes_moved: int | None  # minimum bytes read + written per call; None where no model applies
    variants: list[Variant]


@dataclasses.dataclass
class Result:
    group: str
    case: str
    variant: str
    device: str
    dtype: str
    numel: int
    tensors: int
    median_ms: float
    iqr_ms: float  # interquartile range of the repetitions
    reps: int
    gbps: float | None
    frac_of_copy: float | None
    speedup_vs_best_torch: float | None  # best torch time / this time
    best_torch_variant: str | None


@dataclasses.dataclass
class SkippedVariant:
    group: str
    case: str
    variant: str
    device: str
    dtype: str
    reason: str


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], None], device: str, warmup: int, reps: int) -> list[float]:
    """Per-call times in ms: CUDA events on GPU, perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    if device.startswith("cuda"):
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def copy_bandwidth_gbps(device: str, numel: int, reps: int = 10) -> float:
    """Device copy bandwidth (bytes read + written per second) of a large float32 copy_."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    times = time_fn(lambda: dst.copy_(src), device, warmup=2, reps=reps)
    return 2 * numel * 4 / (statistics.median(times) * 1e-3) / 1e9


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) < 4:
        m = statistics.median(xs)
        return min(xs), m, max(xs)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[1], q[2]


class Progress:
    """A one-line progress bar on stderr (no dependency)."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.start = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"{elapsed:5.0f}s {label[:60]:<60}")
        sys.stderr.flush()
        if self.done == self.total:
            sys.stderr.write("\n")


def _time_once(fn: Callable[[], None], device: str) -> float:
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _reason(e: BaseException) -> str:
    if isinstance(e, Skipped):
        return str(e)
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def _setup_variant(variant: Variant, warmup: int):
    """The variant's per-rep function after `warmup` calls, or the reason it was skipped."""
    try:
        fn = variant.setup()
        for _ in range(warmup):
            fn()
        return fn, None
    except Skipped as e:
        return None, _reason(e)
    except Exception as e:  # noqa: BLE001 -- only for compiled variants, whose failures are expected
        if not variant.compiled:
            raise
        return None, _reason(e)


def run_cases(cases: list[Case], copy_gbps: float, warmup: int, reps: int,
              progress: bool = True) -> tuple[list[Result], list[SkippedVariant]]:
    """Times every variant of a case in the same run, round-robin (one rep of each in turn), so that
    drifts of the machine's state (clocks, other load, memory placement) hit all variants alike.
    Returns the timed results and the variants that were skipped, with the reason."""
    results: list[Result] = []
    skipped: list[SkippedVariant] = []
    bar = Progress(len(cases), enabled=progress)
    for case in cases:
        variants, fns = [], []
        for v in case.variants:
            fn, reason = _setup_variant(v, warmup)
            if fn is None:
                skipped.append(SkippedVariant(case.group, case.name, v.name, case.device, case.dtype, reason))
            else:
                variants.append(v)
                fns.append(fn)
        _sync(case.device)
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(reps):
            for i, fn in enumerate(fns):
                times[i].append(_time_once(fn, case.device))
        del fns
        if any(v.compiled for v in case.variants):
            import torch._dynamo

            torch._dynamo.reset()  # drops this case's compiled code and what it holds on to
        bar.step(f"{case.group}: {case.name}")
        torch_times = [(statistics.median(t), v.name) for v, t in zip(variants, times) if v.is_torch]
        best_torch = min(torch_times) if torch_times else None
        for variant, ts in zip(variants, times):
            q1, med, q3 = _quartiles(ts)
            gbps = case.bytes_moved / (med * 1e-3) / 1e9 if case.bytes_moved is not None else None
            results.append(Result(
                group=case.group, case=case.name, variant=variant.name, device=case.device,
                dtype=case.dtype, numel=case.numel, tensors=case.tensors, median_ms=med,
                iqr_ms=q3 - q1, reps=len(ts), gbps=gbps,
                frac_of_copy=gbps / copy_gbps if gbps is not None else None,
                speedup_vs_best_torch=(best_torch[0] / med) if best_torch else None,
                best_torch_variant=best_torch[1] if best_torch else None))
    return results, skipped


def warmed(fn: Callable[[], None], calls: int = 2) -> Callable[[], None]:
    """fn after `calls` calls: for a compiled variant's setup, so that compilation happens there (not
    in the timed region) and a compile error surfaces in the setup, where the variant is skipped."""
    for _ in range(calls):
        fn()
    return fn


def check_compile_size(tensors: int) -> None:
    """Skips a compiled variant over more tensors than OPTIONS.compile_max_tensors."""
    if tensors > OPTIONS.compile_max_tensors:
        raise Skipped(f"{tensors} tensors: compiling over more than {OPTIONS.compile_max_tensors} takes too long "
                      f"(--compile-max-tensors)")


def compiled(fn: Callable[[], None], calls: int = 2, **compile_kwargs) -> Callable[[], None]:
    """torch.compile(fn), compiled and warmed up now (see `warmed`). Compile in the variant's setup,
    never when building the case: run_cases resets dynamo after each case that has compiled variants,
    so that each case compiles for its own shapes and objects, as a user's program would, instead of
    piling up recompilations (and hitting dynamo's recompile limit) across cases."""
    return warmed(torch.compile(fn, **compile_kwargs), calls)


def environment(device: str, copy_gbps: float) -> dict:
    import fusedopt

    env = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": device,
        "device_name": (torch.cuda.get_device_name(torch.device(device))
                        if device.startswith("cuda") else platform.processor() or platform.machine()),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "fusedopt": fusedopt.__version__,
        "fusedopt_build": fusedopt.build_info(),
        "copy_gbps": round(copy_gbps, 2),
    }
    if not device.startswith("cuda"):
        env["device_name"] = _cpu_model() or env["device_name"]
    return env


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return None


def format_skipped(skipped: list[SkippedVariant]) -> str:
    """The skipped variants, one line each, for after the table ('' when none)."""
    if not skipped:
        return ""
    return "\n".join([f"skipped ({len(skipped)} variants, not timed):"]
                     + [f"  {s.group}: {s.case} [{s.dtype}]: {s.variant}: {s.reason}" for s in skipped])


def format_table(results: list[Result]) -> str:
    header = ["case", "variant", "median ms", "±iqr", "GB/s", "% copy", "vs best torch"]
    rows = []
    last_case = None
    for r in results:
        case = f"{r.group}: {r.case} [{r.dtype}]" if (r.group, r.case) != last_case else ""
        last_case = (r.group, r.case)
        ratio = f"{r.speedup_vs_best_torch:.2f}x" if r.speedup_vs_best_torch is not None else "-"
        gbps = f"{r.gbps:.1f}" if r.gbps is not None else "-"
        frac = f"{100 * r.frac_of_copy:.0f}%" if r.frac_of_copy is not None else "-"
        rows.append([case, r.variant, f"{r.median_ms:.3f}", f"{r.iqr_ms:.3f}", gbps, frac, ratio])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def write_outputs(results: list[Result], env: dict, out_dir: str,
                  skipped: list[SkippedVariant] = ()) -> dict[str, str]:
    """Appends to results.jsonl and results.csv in out_dir (one schema across runs and machines).
    Skipped variants go only to results.jsonl, under the run's "skipped" key."""
    os.makedirs(out_dir, exist_ok=True)
    run_id = time.strftime("%Y%m%dT%H%M%S")
    rows = [dict(run_id=run_id, **dataclasses.asdict(r), device_name=env["device_name"],
                 torch=env["torch"], fusedopt=env["fusedopt"], copy_gbps=env["copy_gbps"])
            for r in results]
    jsonl = os.path.join(out_dir, "results.jsonl")
    with open(jsonl, "a") as f:
        f.write(json.dumps({"run_id": run_id, "environment": env, "results": rows,
                            "skipped": [dataclasses.asdict(s) for s in skipped]}) + "\n")
    csv_path = os.path.join(out_dir, "results.csv")
    new = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["run_id"])
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return {"jsonl": jsonl, "csv": csv_path}
