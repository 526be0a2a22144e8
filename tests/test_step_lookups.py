"""The state lookups a step keeps for the next (``_C.StateLookups``, csrc/python/step_helpers.cpp): while
a group lists the same params and no state was added, removed or replaced, a step takes state[param][key]
from the last step instead of looking it up. Every way of changing the group or its state between
steps must be seen: each scenario below runs against torch.optim's single-tensor Adam doing the same,
after enough steps for the kept lookups to be in use."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import fusedopt
from conftest import assert_close
from optim_parity import assert_unchanged, snapshot

# The dict tags read here differ by Python version (a deprecated field from 3.12, gone in 3.14).
pytestmark = pytest.mark.python_version_specific

SUPPORTED = fusedopt._C.StateLookups.supported
WARM_STEPS = 4  # the first step creates state, the second records the group as it then is


def _lookups(opt, group=0):
    return opt.__dict__["_fusedopt_state_lookups"][group]


SHAPES = [(5,), (3, 4), (), (17,), (2, 3, 2), (9,)]
# Groups this long are read on all threads once their lookups are kept (collect_group's settled
# params), in blocks of 256: the long variants change params from index LONG_OFFSET on (a later block;
# a multiple of len(SHAPES), so that o + k has shape SHAPES[k]).
LONG, LONG_OFFSET = 1100, 702
SIZES = {"short": (len(SHAPES), 0), "long": (LONG, LONG_OFFSET)}


def _pair(n=len(SHAPES), seed=0, **kwargs):
    g = torch.Generator().manual_seed(seed)
    ours = [torch.randn(SHAPES[i % len(SHAPES)], generator=g) for i in range(n)]
    refs = [p.clone() for p in ours]
    return ours, refs, fusedopt.optim.Adam(ours, lr=0.05, **kwargs), torch.optim.Adam(refs, lr=0.05, foreach=False,
                                                                                      **kwargs)


def _assert_settled_reads_used(opt, n):
    # The all-threads read of an unchanged group is what the long variants are for.
    if SUPPORTED and n >= LONG and torch.get_num_threads() > 1:
        assert _lookups(opt).settled > 0


def _step(ours, refs, opt, ref, gen, skip=(), transposed=()):
    for i, (p, q) in enumerate(zip(ours, refs)):
        g = torch.randn(p.shape, generator=gen)
        if i in transposed:  # a 2-D grad in the other memory order than its param's
            g = g.t().contiguous().t()
        p.grad, q.grad = (None, None) if i in skip else (g, g.clone())
    opt.step()
    ref.step()


def _assert_same(ours, refs, opt, ref):
    for p, q in zip(ours, refs):
        assert_close(p, q, torch.float32)
        assert opt.state[p].keys() == ref.state[q].keys()
        for key, value in ref.state[q].items():
            assert_close(opt.state[p][key], value, torch.float32, msg=key)


def _replace_state_tensor(ours, refs, opt, ref, o=0):
    opt.state[ours[o + 1]]["exp_avg"] = torch.full_like(ours[o + 1], 0.5)
    ref.state[refs[o + 1]]["exp_avg"] = torch.full_like(refs[o + 1], 0.5)


def _replace_step_count(ours, refs, opt, ref, o=0):
    opt.state[ours[o + 2]]["step"] = torch.tensor(100.0)
    ref.state[refs[o + 2]]["step"] = torch.tensor(100.0)


def _step_count_retyped_in_place(ours, refs, opt, ref, o=0):
    # Same object and dict, so the kept lookup holds; the count must still be found to need a repair.
    for state, p in ((opt.state, ours[o + 2]), (ref.state, refs[o + 2])):
        state[p]["step"].data = torch.tensor(100.0, dtype=torch.float64)


def _delete_state(ours, refs, opt, ref, o=0):
    del opt.state[ours[o + 0]]
    del ref.state[refs[o + 0]]


def _clear_one_state(ours, refs, opt, ref, o=0):
    opt.state[ours[o + 3]].clear()
    ref.state[refs[o + 3]].clear()


def _new_state_dict(ours, refs, opt, ref, o=0):
    opt.state[ours[o + 4]] = {k: v.clone() + 1 for k, v in opt.state[ours[o + 4]].items()}
    ref.state[refs[o + 4]] = {k: v.clone() + 1 for k, v in ref.state[refs[o + 4]].items()}


def _data_swapped_in_place(ours, refs, opt, ref, o=0):
    # Same Python object, new storage: the kernels must write the new one.
    for state, p in ((opt.state, ours[o + 5]), (ref.state, refs[o + 5])):
        state[p]["exp_avg_sq"].data = torch.full_like(p, 2.0)


def _state_layout_changed_in_place(ours, refs, opt, ref, o=0):
    # Same object and dict, other memory order: the state is laid out like its param again (a copy).
    for state, p in ((opt.state, ours[o + 1]), (ref.state, refs[o + 1])):
        t = state[p]["exp_avg"]
        t.data = t.t().contiguous().t()


def _load_torch_state_dict(ours, refs, opt, ref, o=0):
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))


def _params_reordered(ours, refs, opt, ref, o=0):
    opt.param_groups[0]["params"].reverse()
    ref.param_groups[0]["params"].reverse()


def _param_replaced(ours, refs, opt, ref, o=0):
    fresh = torch.randn(ours[o + 1].shape)
    ours[o + 1] = fresh
    refs[o + 1] = fresh.clone()
    opt.param_groups[0]["params"][o + 1] = ours[o + 1]
    ref.param_groups[0]["params"][o + 1] = refs[o + 1]


def _param_added_to_group(ours, refs, opt, ref, o=0):
    extra = torch.randn(4)
    ours.append(extra)
    refs.append(extra.clone())
    opt.param_groups[0]["params"].append(ours[-1])
    ref.param_groups[0]["params"].append(refs[-1])


def _param_group_added(ours, refs, opt, ref, o=0):
    extra = torch.randn(3, 3)
    ours.append(extra)
    refs.append(extra.clone())
    opt.add_param_group({"params": [ours[-1]], "lr": 0.01})
    ref.add_param_group({"params": [refs[-1]], "lr": 0.01})


def _state_read_for_a_param_without_state(ours, refs, opt, ref, o=0):
    # optimizer.state is a defaultdict: reading it for a new key inserts an empty dict.
    extra = torch.randn(2)
    opt.state[extra]
    ref.state[extra]


def _amsgrad_switched_on(ours, refs, opt, ref, o=0):
    # Another set of state keys. torch raises KeyError for the missing max_exp_avg_sq (it creates state
    # only on a param's first step); fusedopt creates it as torch would have, zeros: given those, both
    # agree.
    opt.param_groups[0]["amsgrad"] = True
    ref.param_groups[0]["amsgrad"] = True
    for q in refs:
        ref.state[q]["max_exp_avg_sq"] = torch.zeros_like(q)


SCENARIOS = [_replace_state_tensor, _replace_step_count, _step_count_retyped_in_place, _delete_state,
             _clear_one_state, _new_state_dict, _data_swapped_in_place, _state_layout_changed_in_place,
             _load_torch_state_dict, _params_reordered, _param_replaced, _param_added_to_group, _param_group_added,
             _state_read_for_a_param_without_state, _amsgrad_switched_on]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("change", SCENARIOS, ids=[f.__name__.strip("_") for f in SCENARIOS])
def test_changes_between_steps_are_seen(change, size):
    n, offset = SIZES[size]
    ours, refs, opt, ref = _pair(n)
    gen = torch.Generator().manual_seed(1)
    for _ in range(WARM_STEPS):
        _step(ours, refs, opt, ref, gen)
    if SUPPORTED:
        assert _lookups(opt).reuses == WARM_STEPS - 2
    _assert_settled_reads_used(opt, n)
    change(ours, refs, opt, ref, offset)
    for _ in range(3):
        _step(ours, refs, opt, ref, gen)
        _assert_same(ours, refs, opt, ref)


@pytest.mark.parametrize("size", SIZES)
def test_params_without_grads_on_some_steps(size):
    n, o = SIZES[size]
    ours, refs, opt, ref = _pair(n)
    gen = torch.Generator().manual_seed(3)
    plan = [(), (), (), (o + 1, o + 4), (o + 1, o + 4), (), (o,), (), ()]
    for skip in plan:
        _step(ours, refs, opt, ref, gen, skip=skip)
        _assert_same(ours, refs, opt, ref)
    if SUPPORTED:
        assert _lookups(opt).reuses >= 4
    _assert_settled_reads_used(opt, n)


@pytest.mark.parametrize("size", SIZES)
def test_grads_laid_out_unlike_their_params(size):
    n, o = SIZES[size]
    ours, refs, opt, ref = _pair(n)
    gen = torch.Generator().manual_seed(5)
    for transposed in [(), (), (), (), (o + 1,), (o + 1, o + 7), ()]:
        _step(ours, refs, opt, ref, gen, transposed=transposed)
        _assert_same(ours, refs, opt, ref)
    _assert_settled_reads_used(opt, n)


def _wrong_shape_state_put_in(opt, params, o):
    opt.state[params[o + 3]]["exp_avg_sq"] = torch.zeros(5)
    return f"param {o + 3}: state 'exp_avg_sq' has shape"


def _state_resized_in_place(opt, params, o):
    # Same object and dict, so the kept lookup holds; the tensor itself is checked again every step.
    opt.state[params[o]]["exp_avg"].data = torch.zeros(7)
    return f"param {o}: state 'exp_avg' has shape"


def _step_resized_in_place(opt, params, o):
    opt.state[params[o + 2]]["step"].data = torch.zeros(2)
    return "the state 'step' of a param is a tensor of 2 elements"


def _sparse_grad(opt, params, o):
    # Nothing kept changed; the grad is read afresh every step.
    params[o + 1].grad = params[o + 1].grad.to_sparse()
    return f"param {o + 1}: has a sparse gradient"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("break_state", [_wrong_shape_state_put_in, _state_resized_in_place, _step_resized_in_place,
                                         _sparse_grad],
                         ids=["replaced", "resized_in_place", "step_resized_in_place", "sparse_grad"])
def test_bad_input_after_steps_is_rejected_before_any_update(break_state, size):
    n, offset = SIZES[size]
    ours, refs, opt, ref = _pair(n)
    gen = torch.Generator().manual_seed(4)
    for _ in range(WARM_STEPS):
        _step(ours, refs, opt, ref, gen)
    for p in ours:
        p.grad = torch.randn(p.shape)
    message = break_state(opt, ours, offset)
    snap = snapshot(opt)
    with pytest.raises((ValueError, RuntimeError), match=message):
        opt.step()
    assert_unchanged(opt, snap)


def test_kept_lookups_stay_out_of_state_dict_pickle_and_copies():
    ours, refs, opt, ref = _pair()
    gen = torch.Generator().manual_seed(6)
    for _ in range(WARM_STEPS):
        _step(ours, refs, opt, ref, gen)
    assert "_fusedopt_state_lookups" not in str(opt.state_dict().keys())
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert "_fusedopt_state_lookups" not in clone.__dict__
        params = clone.param_groups[0]["params"]
        for p in params:
            p.grad = torch.ones(p.shape)
        before = [clone.state[p]["exp_avg"].clone() for p in params]
        clone.step()
        clone.step()
        for p, b in zip(params, before):
            assert not torch.equal(clone.state[p]["exp_avg"], b)


@pytest.mark.skipif(not SUPPORTED, reason="this Python has no dict tags (3.14+ or free-threaded)")
def test_lookups_are_reused_only_while_nothing_changed():
    ours, refs, opt, ref = _pair()
    gen = torch.Generator().manual_seed(7)
    counts = []
    for i in range(8):
        if i == 5:
            _replace_state_tensor(ours, refs, opt, ref)  # one param's dict: the group is still reused
        if i == 6:
            _delete_state(ours, refs, opt, ref)  # the state dict itself: not reused, state created again
        _step(ours, refs, opt, ref, gen)
        counts.append(_lookups(opt).reuses)
    # step 0 creates state, 1 records, 2-5 reuse, 6 finds state changed, 7 records again (6 created state).
    assert counts == [0, 0, 1, 2, 3, 4, 4, 4]
    _step(ours, refs, opt, ref, gen)
    assert _lookups(opt).reuses == 5
    _assert_same(ours, refs, opt, ref)


class _TensorSubclass(torch.Tensor):
    """A Python subclass of Tensor, as DTensor (FSDP2's params) is one: isinstance on it calls into
    Python."""


def test_long_group_of_tensor_subclass_params():
    """A long group is read on worker threads that do not hold the GIL; params and states of a tensor
    subclass must not be type-checked there with isinstance (it allocates Python objects, and such
    concurrent allocations corrupted the interpreter's heap: a segfault in the SGD benchmark on
    DTensors)."""
    ours, refs, opt, ref = _pair(LONG)
    opt.param_groups[0]["params"] = ours = [p.as_subclass(_TensorSubclass) for p in ours]
    gen = torch.Generator().manual_seed(8)
    for _ in range(WARM_STEPS + 8):
        _step(ours, refs, opt, ref, gen)
        for p in ours[::7]:  # states of the subclass too
            opt.state[p]["exp_avg"] = opt.state[p]["exp_avg"].as_subclass(_TensorSubclass)
    assert all(type(p) is _TensorSubclass for p in ours)
    _assert_same(ours, refs, opt, ref)
