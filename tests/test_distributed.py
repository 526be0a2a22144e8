"""fusedopt optimizers under DDP, FSDP2, ZeroRedundancyOptimizer, torch.distributed.checkpoint,
GradScaler, on Replicate and Shard(1) DTensors and under tensor (and sequence) parallelism: 2 processes on
gloo/CPU (tests/distributed_worker.py), compared with torch.

The ranks are started once for the whole file (starting processes and importing torch dominates the
time); each (case, optimizer) pair is its own test over the worker's results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist

import distributed_worker

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="needs torch.distributed with gloo"),
]

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "results.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Run from a temporary directory so the ranks import the installed fusedopt, not the source tree.
    proc = subprocess.run([sys.executable, WORKER, str(out)], cwd=out.parent, env=env,
                          capture_output=True, text=True, timeout=240)
    if not out.exists():
        pytest.fail(f"the distributed worker wrote no results (exit {proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return json.loads(out.read_text())


def _cases():
    for case in distributed_worker.CASES:
        reason = distributed_worker.KNOWN_FAILURES.get(case)
        yield pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=reason)) if reason else case


@pytest.mark.parametrize("optimizer", list(distributed_worker.OPTIMIZERS))
@pytest.mark.parametrize("case", list(_cases()))
def test_distributed(results, case, optimizer):
    key = f"{case}/{optimizer}"
    assert key in results, f"{key} did not run (the worker stopped early?)"
    assert results[key]["ok"], results[key]["detail"]
