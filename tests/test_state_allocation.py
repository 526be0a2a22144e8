"""Optimizer state made for many CPU params at once (fusedopt.optim._common.new_states_like,
csrc/python/state_allocation.cpp): one block per call, huge pages when it spans one, and yet each state
tensor behaves as one made by torch.zeros_like: its own storage of its own size, the param's strides,
saved, shared and kept alive on its own."""

from __future__ import annotations

import gc
import io

import pytest
import torch

import fusedopt
from conftest import assert_close, param_zoo

# (class, constructor kwargs, the state keys that hold one value per element)
OPTIMIZERS = [
    (fusedopt.optim.SGD, dict(lr=0.1, momentum=0.9), ("momentum_buffer",)),
    (fusedopt.optim.Adam, dict(lr=0.1, amsgrad=True), ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    (fusedopt.optim.AdamW, dict(lr=0.1), ("exp_avg", "exp_avg_sq")),
    (fusedopt.optim.RMSprop, dict(lr=0.1, momentum=0.5, centered=True), ("square_avg", "momentum_buffer", "grad_avg")),
    (fusedopt.optim.Adagrad, dict(lr=0.1, initial_accumulator_value=0.25), ("sum",)),
]
IDS = [cls.__name__ + ("_amsgrad" if kw.get("amsgrad") else "") for cls, kw, _ in OPTIMIZERS]


def _params(extra_large: bool = False):
    params = [torch.nn.Parameter(t) for t in param_zoo(torch.float32, "cpu")]
    if extra_large:  # the block then spans several huge pages
        params.append(torch.nn.Parameter(torch.randn(3 << 20)))
    for p in params:
        p.grad = torch.randn_like(p)
    return params


@pytest.mark.parametrize("cls,kwargs,keys", OPTIMIZERS, ids=IDS)
def test_each_state_tensor_has_a_storage_of_its_own_like_its_param(cls, kwargs, keys):
    params = _params(extra_large=True)
    opt = cls(params, **kwargs)
    opt.step()
    starts = set()
    for p in params:
        for key in keys:
            t = opt.state[p][key]
            assert type(t) is torch.Tensor and t.dtype == p.dtype and t.shape == p.shape
            if p.numel() > 1:
                assert t.stride() == p.stride(), (key, p.shape, p.stride())  # as preserve_format
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
            assert t.storage_offset() == 0
            if t.numel():
                assert t.data_ptr() % 64 == 0
                assert t.data_ptr() not in starts
                starts.add(t.data_ptr())


@pytest.mark.parametrize("cls,kwargs,keys", OPTIMIZERS, ids=IDS)
def test_steps_on_a_large_block_match_torch(cls, kwargs, keys):
    params = _params(extra_large=True)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, theirs):
        q.grad = p.grad.clone()
    ours_opt = cls(params, **kwargs)
    torch_opt = getattr(torch.optim, cls.__name__)(theirs, foreach=False, **kwargs)
    for _ in range(3):
        ours_opt.step()
        torch_opt.step()
    for p, q in zip(params, theirs):
        assert_close(p, q, torch.float32)
        for key in keys:
            assert_close(ours_opt.state[p][key], torch_opt.state[q][key], torch.float32)


def test_adagrad_sums_start_at_the_initial_value_before_any_step():
    params = [torch.nn.Parameter(t) for t in param_zoo(torch.float32, "cpu")]
    opt = fusedopt.optim.Adagrad(params, lr=0.1, initial_accumulator_value=0.3)
    for p in params:
        s = opt.state[p]["sum"]
        assert torch.equal(s, torch.full_like(p, 0.3)) and s.stride() == p.stride()


def test_a_saved_state_tensor_holds_only_its_own_bytes():
    small, large = torch.nn.Parameter(torch.randn(10)), torch.nn.Parameter(torch.randn(1 << 20))
    small.grad, large.grad = torch.randn(10), torch.randn(1 << 20)
    opt = fusedopt.optim.AdamW([small, large], lr=0.1)
    opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state[small]["exp_avg"], buffer)
    assert buffer.tell() < 4096  # not the 4 MB block the large param's state lives in
    buffer.seek(0)
    assert torch.equal(torch.load(buffer), opt.state[small]["exp_avg"])


def test_state_outlives_the_optimizer_and_its_block_siblings():
    params = _params(extra_large=True)
    opt = fusedopt.optim.Adam(params, lr=0.1)
    opt.step()
    kept = opt.state[params[-1]]["exp_avg_sq"]
    expected = kept.clone()
    del opt
    gc.collect()
    assert torch.equal(kept, expected)
    kept.add_(1.0)  # still writable memory
    assert torch.equal(kept, expected + 1.0)


def test_state_can_move_to_shared_memory_and_keeps_stepping():
    params = _params()
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, theirs):
        q.grad = p.grad.clone()
    ours, ref = fusedopt.optim.Adam(params, lr=0.1), torch.optim.Adam(theirs, lr=0.1, foreach=False)
    ours.step()
    ref.step()
    for p in params:
        state = ours.state[p]["exp_avg"]
        before = state.clone()
        state.share_memory_()
        assert state.is_shared() and torch.equal(state, before)
    ours.step()
    ref.step()
    for p, q in zip(params, theirs):
        assert_close(p, q, torch.float32)


def test_state_cannot_be_resized_in_place():
    # Like any tensor on memory it did not allocate (torch.from_numpy); torch.optim never resizes state.
    p = torch.nn.Parameter(torch.randn(8))
    p.grad = torch.randn(8)
    opt = fusedopt.optim.AdamW([p], lr=0.1)
    opt.step()
    with pytest.raises(RuntimeError, match="not resizable"):
        opt.state[p]["exp_avg"].resize_(100)


def test_master_weights_of_half_params_come_from_one_block_too():
    params = [torch.nn.Parameter(t) for t in param_zoo(torch.bfloat16, "cpu")]
    originals = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = fusedopt.optim.AdamW(params, lr=0.0, weight_decay=0.0, master_weights=True)
    opt.step()  # lr 0: the masters keep the params' values
    for p, original in zip(params, originals):
        master = opt.state[p]["master_param"]
        assert master.dtype == torch.float32 and master.shape == p.shape
        if p.numel() > 1:
            assert master.stride() == p.stride()
        assert master.untyped_storage().nbytes() == master.numel() * 4
        assert torch.equal(master, original.float())
