"""Run fusedopt's benchmarks: ``python benchmarks/run.py [--device cuda] [--quick] [--only sgd]``.

Prints a table (median time, spread, GB/s, % of copy bandwidth, speed-up over torch's fastest path)
and appends the results to benchmarks/out/results.jsonl and results.csv.

torch's paths include torch.compile'd ones ("torch compiled ..."; compiled and warmed up before timing,
tens of seconds per case with Inductor on CPU): on by default, off with --quick unless --compile is
given, off with --no-compile; skipped over more than --compile-max-tensors tensors (default 256). A
compiled variant that is skipped or fails to compile is listed with the reason after the table and in
results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import adam  # noqa: E402
import batchnorm  # noqa: E402
import clip  # noqa: E402
import distributed  # noqa: E402
import dropout  # noqa: E402
import gpu_goals  # noqa: E402
import harness  # noqa: E402
import optimizers  # noqa: E402
import rmsprop_adagrad  # noqa: E402
import training  # noqa: E402
import workloads  # noqa: E402

# Benchmark groups by name; each op family's module contributes its GROUPS (name -> case builder).
GROUPS = {
    **optimizers.GROUPS,
    **adam.GROUPS,
    **batchnorm.GROUPS,
    **clip.GROUPS,
    **distributed.GROUPS,
    **dropout.GROUPS,
    **gpu_goals.GROUPS,
    **rmsprop_adagrad.GROUPS,
    **training.GROUPS,
}

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--only", nargs="*", default=sorted(GROUPS), choices=sorted(GROUPS),
                    help="benchmark groups to run")
    ap.add_argument("--quick", action="store_true", help="small sizes and few repetitions (a smoke test)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per variant")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="add the torch.compile'd torch variants (default: yes, except with --quick)")
    ap.add_argument("--compile-max-tensors", type=int, default=harness.OPTIONS.compile_max_tensors,
                    help="skip compiled variants over more tensors than this (compile time grows with them)")
    ap.add_argument("--record", metavar="NAME",
                    help="also append this run to benchmarks/results/NAME.jsonl and regenerate RESULTS.md")
    args = ap.parse_args(argv)

    reps = args.reps or (3 if args.quick else (50 if args.device.startswith("cuda") else 25))
    warmup = args.warmup or (1 if args.quick else 5)
    dtype = DTYPES[args.dtype]
    harness.OPTIONS.quick = args.quick
    harness.OPTIONS.compile = (not args.quick) if args.compile is None else args.compile
    harness.OPTIONS.compile_max_tensors = args.compile_max_tensors
    sets = workloads.standard_sets(args.quick, args.device)
    cases = []
    for group in args.only:
        cases += GROUPS[group](args.device, dtype, sets)

    copy_numel = (1 << 22) if args.quick else ((1 << 28) if args.device.startswith("cuda") else (1 << 26))
    copy_gbps = harness.copy_bandwidth_gbps(args.device, copy_numel)
    env = harness.environment(args.device, copy_gbps)
    env["torch_compile_variants"] = harness.OPTIONS.compile
    print(f"# fusedopt benchmarks on {env['device_name']} ({args.device}), torch {env['torch']}, "
          f"fusedopt {env['fusedopt']} [{env['fusedopt_build']['cpu_capability']}], "
          f"{env['cpu_threads']} CPU threads, copy bandwidth {copy_gbps:.1f} GB/s"
          f"{' (quick mode: sizes too small to judge speed)' if args.quick else ''}"
          f"{'' if harness.OPTIONS.compile else '; torch.compile variants off (--compile adds them)'}")
    results, skipped = harness.run_cases(cases, copy_gbps, warmup, reps, progress=not args.no_progress)
    print(harness.format_table(results))
    if skipped:
        print("\n" + harness.format_skipped(skipped))
    paths = harness.write_outputs(results, env, args.out, skipped)
    try:
        import plots
    except ImportError as e:  # matplotlib: only the plots need it (`make bench` installs it)
        plots, pngs = None, []
        print(f"\nno plots ({e}; pip install matplotlib)")
    if plots is not None:
        with open(paths["jsonl"]) as f:
            latest = json.loads(f.readlines()[-1])
        pngs = plots.plot_run(latest, args.out, f"{args.device.split(':')[0]}-{args.dtype}")
    print(f"\nresults appended to {paths['jsonl']} and {paths['csv']}; plots: {', '.join(pngs) or 'none'}")
    if args.record:
        record = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{args.record}.jsonl")
        os.makedirs(os.path.dirname(record), exist_ok=True)
        with open(paths["jsonl"]) as src, open(record, "a") as dst:
            dst.write(src.readlines()[-1])
        print(f"recorded in {record}")
        try:
            import report
        except ImportError as e:  # report.py draws the recorded runs' plots: matplotlib
            print(f"RESULTS.md not regenerated ({e}): pip install matplotlib, then python benchmarks/report.py")
            return 0
        report.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
