"""Every optimizer op over lists long enough to be checked on several threads, in blocks of 256
(csrc/common/tensor_lists.cpp: run_entry_checks), with the op's view of each block filled as soon as
the block's checks pass. A bad entry anywhere must be reported as the first bad entry, whichever thread
meets it first, and nothing may be written: not the entries before it, whose view was already filled,
and not the bad entry itself (a sparse tensor's data pointer is never read)."""

from __future__ import annotations

import pytest
import torch

from conftest import DEVICES
from optim_parity import assert_op_rejects_before_writing

N = 1000
# Positions of the bad entries: the first one named in the error.
BAD_ENTRIES = {"late": [700], "early_and_late": [40, 700], "ends": [0, 999], "block_edge": [255, 256]}

ADAM = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=True, maximize=False,
            decoupled_weight_decay=False, master_params=[])
RMSPROP = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.9, centered=True, maximize=False)
ADAGRAD = dict(lr=0.01, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False)
SGD = dict(lr=0.1, weight_decay=0.0, momentum=0.9, dampening=0.0, nesterov=False, maximize=False,
           is_first_step=False)

sparse = (lambda: torch.ones(3).to_sparse(), "grads\\[{}\\] has layout Sparse")
# op name: (tensor lists of N (3,)-tensors, whether a list of step counts follows, op kwargs,
#           {case: (list index, the bad tensor, the error)})
OPS = {
    "adam_": (5, True, ADAM, {
        "exp_avgs": (2, lambda: torch.ones(3, dtype=torch.float64), "exp_avgs\\[{}\\] has dtype Double"),
        "state_steps": (5, lambda: torch.zeros((), dtype=torch.float64), "state_steps\\[{}\\] has dtype Double"),
        "sparse_grads": (1, *sparse)}),
    "rmsprop_": (5, True, RMSPROP, {
        "grad_avgs": (4, lambda: torch.ones(3, dtype=torch.float64), "grad_avgs\\[{}\\] has dtype Double"),
        "state_steps": (5, lambda: torch.zeros(2), "state_steps\\[{}\\] has 2 elements"),
        "sparse_grads": (1, *sparse)}),
    "adagrad_": (3, True, ADAGRAD, {
        "state_sums": (2, lambda: torch.ones(3, dtype=torch.float64), "state_sums\\[{}\\] has dtype Double"),
        "state_steps": (3, lambda: torch.zeros((), dtype=torch.int64), "state_steps\\[{}\\] has dtype Long"),
        "sparse_grads": (1, *sparse)}),
    "sgd_": (3, False, SGD, {
        "momentum_buffers": (2, lambda: torch.ones(3, 1), "momentum_buffers\\[{}\\] has shape"),
        "params_gaps": (0, lambda: torch.ones(3, 2)[:, 0], "params\\[{}\\] is not dense"),
        "sparse_grads": (1, *sparse)}),
}
CASES = [(op, case) for op, (_, _, _, cases) in OPS.items() for case in cases]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
@pytest.mark.parametrize("op,case", CASES, ids=[f"{op}{case}" for op, case in CASES])
def test_op_rejects_first_bad_entry_of_long_lists(op, case, bad, device):
    num_lists, has_steps, kwargs, cases = OPS[op]
    lists = [[torch.full((3,), 2.0, device=device) for _ in range(N)] for _ in range(num_lists)]
    if has_steps:
        lists.append([torch.zeros((), device=device) for _ in range(N)])
    k, make_bad, message = cases[case]
    for i in bad:
        lists[k][i] = make_bad().to(device)
    assert_op_rejects_before_writing(getattr(torch.ops.fusedopt, op), lists, kwargs, message.format(bad[0]))


@pytest.mark.parametrize("device", DEVICES)
def test_adam_with_masters_rejects_first_bad_entry_of_long_lists(device):
    half = lambda: [torch.full((3,), 2.0, dtype=torch.bfloat16, device=device) for _ in range(N)]  # noqa: E731
    full = lambda: [torch.full((3,), 2.0, device=device) for _ in range(N)]  # noqa: E731
    lists = [half(), half(), full(), full(), full(), [torch.zeros((), device=device) for _ in range(N)]]
    masters = full()
    masters[600] = torch.ones(4, device=device)
    lists[5][700] = torch.zeros(2, device=device)
    assert_op_rejects_before_writing(torch.ops.fusedopt.adam_, lists, dict(ADAM, master_params=masters),
                                     "master_params\\[600\\] has shape")
