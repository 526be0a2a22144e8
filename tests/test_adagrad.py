"""fusedopt.optim.Adagrad and torch.ops.fusedopt.adagrad_ against torch.optim.Adagrad."""

from __future__ import annotations

import copy
import itertools
import random
from fractions import Fraction

import pytest
import torch

import fusedopt
from conftest import DEVICES, DTYPES, make_tensor, param_zoo
from optim_parity import (NativeReference, assert_op_rejects_before_writing, Float32Reference, assert_close, check_bad_input_in_later_group_modifies_nothing,
                          check_grad_scaler_matches_torch, check_op_unscales_and_skips, exact_sqrt, fresh_model,
                          train)

OPTION_COMBOS = [
    dict(lr_decay=ld, weight_decay=wd, maximize=mx, initial_accumulator_value=iv)
    for ld, wd, mx, iv in itertools.product([0.0, 0.05], [0.0, 0.01], [False, True], [0.0, 0.3])
]


def _combo_id(c):
    return "-".join(f"{k}={v}" for k, v in c.items() if v) or "plain"


def _mirror_step(params, grads, state, *, lr, lr_decay, weight_decay, eps, maximize, initial_accumulator_value):
    """torch.optim.Adagrad's single-tensor path, op by op, with a correctly rounded sqrt."""
    for p, g in zip(params, grads):
        s = state.setdefault(id(p), dict(step=0.0, sum=torch.full_like(p, initial_accumulator_value)))
        if g is None:
            continue
        s["step"] += 1
        grad = -g if maximize else g
        if weight_decay != 0:
            grad = grad.add(p, alpha=weight_decay)
        clr = lr / (1 + (s["step"] - 1) * lr_decay)
        s["sum"].addcmul_(grad, grad, value=1)
        std = exact_sqrt(s["sum"]).add_(eps)
        p.addcdiv_(grad, std, value=-clr)


@pytest.mark.skipif(fusedopt.cpu_capability() == "DEFAULT", reason="needs the fma of the AVX2/AVX512 kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_bitwise_equal_to_torch_ops_with_exact_sqrt(dtype):
    """On CPU the update follows torch's single-tensor path operation by operation: bitwise equal to it
    once torch's sqrt (not correctly rounded, see optim_parity.py) is replaced by a correctly rounded one."""
    for options in OPTION_COMBOS:
        params = param_zoo(dtype, "cpu", seed=5)
        ours, theirs = [p.clone() for p in params], [p.clone() for p in params]
        opt = fusedopt.optim.Adagrad(ours, lr=0.05, eps=1e-3, **options)
        state = {}
        gen = torch.Generator().manual_seed(6)
        for step in range(8):
            grads = [None if (step in (1, 2) and i % 3 == 0) else make_tensor(p.shape, dtype, "cpu", generator=gen)
                     for i, p in enumerate(ours)]
            for p, g in zip(ours, grads):
                p.grad = None if g is None else g.clone()
            opt.step()
            _mirror_step(theirs, grads, state, lr=0.05, eps=1e-3, **options)
        for i, (p, q) in enumerate(zip(ours, theirs)):
            assert torch.equal(p, q), (_combo_id(options), i, p.shape, (p - q).abs().max())
            assert opt.state[p]["step"].item() == state[id(q)]["step"]
            assert torch.equal(opt.state[p]["sum"], state[id(q)]["sum"])


def test_cpu_clr_rounded_as_python():
    """clr = lr / (1 + (step - 1) * lr_decay) with each operation rounded, as torch computes it in
    Python: with this lr_decay, at step 6, a denominator contracted into an fma gives another clr, and
    float64 params then differ in the last bits."""
    lr, lr_decay = 0.05, 0.1282794438439714
    fma_denominator = float(Fraction(5) * Fraction(lr_decay) + 1)  # 5 * lr_decay + 1, rounded once
    assert lr / (1 + 5 * lr_decay) != lr / fma_denominator
    p = torch.ones(3, dtype=torch.float64)
    q = p.clone()
    opt = fusedopt.optim.Adagrad([p], lr=lr, lr_decay=lr_decay, eps=1e-3)
    state, gen = {}, torch.Generator().manual_seed(0)
    for _ in range(8):
        g = torch.randn(3, dtype=torch.float64, generator=gen)
        p.grad = g.clone()
        opt.step()
        _mirror_step([q], [g], state, lr=lr, lr_decay=lr_decay, weight_decay=0.0, eps=1e-3, maximize=False,
                     initial_accumulator_value=0.0)
        assert torch.equal(p, q), (state[id(q)]["step"], (p - q).abs().max())


def _run_parity(device, dtype, options, steps, seed, lr=None):
    rng = random.Random(seed)
    lr = lr if lr is not None else rng.uniform(0.01, 0.2)
    params = param_zoo(dtype, device, seed)
    ours = [p.clone() for p in params]
    opt = fusedopt.optim.Adagrad(ours, lr=lr, **options)
    if dtype in (torch.float16, torch.bfloat16):
        ref = Float32Reference(torch.optim.Adagrad, params, dtype, lr=lr, **options)
        ref_params, ref_opt, step_ref = ref.params, ref.opt, ref.step
    else:
        ref_params = [p.clone() for p in params]
        ref_opt = torch.optim.Adagrad(ref_params, lr=lr, **options)

        def step_ref(grads):
            for p, g in zip(ref_params, grads):
                p.grad = None if g is None else g.clone()
            ref_opt.step()

    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        # Some params skip some steps: their step counts, hence their decayed lr, fall behind.
        grads = [None if (i + step) % 5 == 0 else make_tensor(p.shape, dtype, device, generator=gen)
                 for i, p in enumerate(ours)]
        for p, g in zip(ours, grads):
            p.grad = None if g is None else g.clone()
        opt.step()
        step_ref(grads)
    for i, (a, b) in enumerate(zip(ours, ref_params)):
        assert a.stride() == params[i].stride(), "the step must not change a param's layout"
        assert_close(a, b, dtype, msg=f"param {i} shape {tuple(a.shape)} stride {a.stride()}")
        sa, sb = opt.state[a], ref_opt.state[b]
        assert sa["step"].item() == sb["step"].item()
        assert sa["step"].device == a.device and sa["step"].dtype == torch.float32
        assert_close(sa["sum"], sb["sum"], dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", OPTION_COMBOS, ids=_combo_id)
def test_matches_torch_every_option_float32(device, options):
    _run_parity(device, torch.float32, options, steps=25, seed=len(_combo_id(options)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", range(4))
def test_matches_torch_random_options_every_dtype(device, dtype, seed):
    rng = random.Random(seed)
    options = dict(rng.choice(OPTION_COMBOS))
    options.update(eps=rng.choice([1e-10, 1e-3]), lr_decay=options["lr_decay"] and rng.uniform(1e-3, 0.5),
                   weight_decay=options["weight_decay"] and rng.uniform(1e-4, 0.1),
                   initial_accumulator_value=options["initial_accumulator_value"] and rng.uniform(0.01, 1.0))
    _run_parity(device, dtype, options, steps=30, seed=seed)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_and_many_tensors_in_one_group(device):
    """2,000+ tensors of four dtypes in one call, each with its own step count."""
    gen = torch.Generator().manual_seed(3)
    params = [make_tensor((random.Random(i).randint(1, 300),), DTYPES[i % 4], device, generator=gen)
              for i in range(2100)]
    ours = [p.clone() for p in params]
    kwargs = dict(lr=0.05, lr_decay=0.1, weight_decay=1e-3)
    opt = fusedopt.optim.Adagrad(ours, **kwargs)
    refs = [NativeReference(torch.optim.Adagrad, [p], **kwargs) if p.dtype == torch.float64
            else Float32Reference(torch.optim.Adagrad, [p], p.dtype, **kwargs) for p in params]
    for step in range(3):
        grads = [None if (i % 3 == step) else torch.randn_like(p) for i, p in enumerate(ours)]
        for p, g in zip(ours, grads):
            p.grad = g
        opt.step()
        for r, g in zip(refs, grads):
            r.step([g])
    for p, r in zip(ours, refs):
        assert_close(p, r.params[0], p.dtype)  # float64 against torch in float64
        assert opt.state[p]["step"].item() == 2


@pytest.mark.parametrize("device", DEVICES)
def test_param_groups_closure_and_scheduler(device):
    results = []
    for cls in (torch.optim.Adagrad, fusedopt.optim.Adagrad):
        model = fresh_model(device)
        opt = cls([{"params": model[0].parameters(), "lr": 0.05, "lr_decay": 0.1},
                   {"params": model[2].parameters(), "weight_decay": 0.1, "initial_accumulator_value": 0.5}],
                  lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        train(model, opt, 10, device, closure=True, scheduler=sched)
        results.append((model, opt))
    (m_ref, o_ref), (m, o) = results
    for a, b in zip(m.parameters(), m_ref.parameters()):
        assert_close(a, b, torch.float32)
        # torch fills every sum with the constructor's initial_accumulator_value (0 here), not the group's
        assert_close(o.state[a]["sum"], o_ref.state[b]["sum"], torch.float32)
    assert [g["lr"] for g in o.param_groups] == [g["lr"] for g in o_ref.param_groups]


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_lr(device):
    results = []
    for cls in (torch.optim.Adagrad, fusedopt.optim.Adagrad):
        model = fresh_model(device)
        opt = cls(model.parameters(), lr=torch.tensor(0.05, device=device), lr_decay=0.2)
        train(model, opt, 3, device)
        opt.param_groups[0]["lr"].fill_(0.01)
        train(model, opt, 3, device, seed=2)
        results.append(model)
    for a, b in zip(results[1].parameters(), results[0].parameters()):
        assert_close(a, b, torch.float32)


def test_state_created_at_construction_like_torch():
    model = fresh_model("cpu")
    ours = fusedopt.optim.Adagrad(model.parameters(), initial_accumulator_value=0.25)
    theirs = torch.optim.Adagrad(model.parameters(), initial_accumulator_value=0.25)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert list(a["state"][k]) == list(b["state"][k]) == ["step", "sum"]
        assert torch.equal(a["state"][k]["sum"], b["state"][k]["sum"])
        assert a["state"][k]["step"].item() == 0 and a["state"][k]["step"].dtype == torch.float32
    assert isinstance(ours, torch.optim.Adagrad)


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoints_move_both_ways(device):
    """torch -> fusedopt -> torch mid-training equals torch alone; torch keeps 'step' on the CPU,
    fusedopt moves it to the param's device on load."""
    kwargs = dict(lr=0.05, lr_decay=0.1, weight_decay=1e-2, initial_accumulator_value=0.1)
    model = fresh_model(device)
    opt = torch.optim.Adagrad(model.parameters(), **kwargs)
    train(model, opt, 3, device)
    for dst_cls, seed in ((fusedopt.optim.Adagrad, 1), (torch.optim.Adagrad, 2)):
        sd = copy.deepcopy(opt.state_dict())
        opt = dst_cls(model.parameters(), **kwargs)
        opt.load_state_dict(sd)
        assert opt.state_dict()["param_groups"] == sd["param_groups"]
        if dst_cls is fusedopt.optim.Adagrad:
            for p in model.parameters():
                assert opt.state[p]["step"].device == p.device and opt.state[p]["step"].item() == 3
        train(model, opt, 3, device, seed=seed)
    model_ref = fresh_model(device)
    opt_ref = torch.optim.Adagrad(model_ref.parameters(), **kwargs)
    for seed in (0, 1, 2):
        train(model_ref, opt_ref, 3, device, seed=seed)
    for a, b in zip(model.parameters(), model_ref.parameters()):
        assert_close(a, b, torch.float32)
    for p, q in zip(model.parameters(), model_ref.parameters()):
        assert opt.state[p]["step"].item() == opt_ref.state[q]["step"].item() == 9


def test_add_param_group_gets_state():
    """torch's Adagrad creates state only in __init__ (a later group fails there); ours creates it."""
    a, b = torch.randn(4), torch.randn(3)
    opt = fusedopt.optim.Adagrad([a], lr=0.1)
    opt.add_param_group({"params": [b], "initial_accumulator_value": 0.5})
    a.grad, b.grad = torch.ones(4), torch.ones(3)
    b0 = b.clone()
    opt.step()
    assert opt.state[b]["step"].item() == 1
    assert_close(opt.state[b]["sum"], torch.full((3,), 1.5), torch.float32)
    assert_close(b, b0 - 0.1 / (1.5 ** 0.5 + 1e-10), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_grad_scaler_unscales_in_kernel_and_skips_nonfinite_steps(device):
    kwargs = dict(lr=0.05, lr_decay=0.1)
    check_grad_scaler_matches_torch(device, lambda ps: fusedopt.optim.Adagrad(ps, **kwargs),
                                    [lambda ps: torch.optim.Adagrad(ps, **kwargs)], expected_steps=4)


def _op_kwargs(**over):
    kw = dict(lr=0.1, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False)
    kw.update(over)
    return kw


@pytest.mark.parametrize("device", DEVICES)
def test_op_uses_each_tensors_own_step_and_honours_found_inf(device):
    p = [make_tensor((100,), torch.float32, device) for _ in range(2)]
    g = [make_tensor((100,), torch.float32, device) * 8 for _ in range(2)]
    sums = [torch.ones_like(t) for t in p]
    steps = [torch.tensor(0.0, device=device), torch.tensor(9.0, device=device)]
    p0, g0 = [t.clone() for t in p], [t.clone() for t in g]
    check_op_unscales_and_skips(
        device, lambda **amp: torch.ops.fusedopt.adagrad_(p, g, sums, steps, **_op_kwargs(lr_decay=0.5), **amp),
        p + sums, g, steps=steps, shape=())
    assert [s.item() for s in steps] == [1, 10]
    for i, step in enumerate((1, 10)):
        clr = 0.1 / (1 + (step - 1) * 0.5)
        grad = g0[i] / 8
        assert_close(g[i], grad, torch.float32)
        assert_close(sums[i], 1 + grad * grad, torch.float32)
        assert_close(p[i], p0[i] - clr * grad / (1 + grad * grad).sqrt(), torch.float32)


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, raised before anything is modified


def test_constructor_errors_match_torch():
    params = [torch.zeros(3, requires_grad=True)]
    cases = [dict(lr=-1.0), dict(lr_decay=-1.0), dict(weight_decay=-1.0), dict(initial_accumulator_value=-1.0),
             dict(eps=-1.0), dict(lr=torch.tensor([0.1, 0.2]))]
    for kwargs in cases:
        with pytest.raises(ValueError) as ours:
            fusedopt.optim.Adagrad(params, **kwargs)
        with pytest.raises(ValueError) as theirs:
            torch.optim.Adagrad(params, **kwargs)
        assert str(ours.value) == str(theirs.value), kwargs
    with pytest.raises(RuntimeError) as ours:
        fusedopt.optim.Adagrad(params, fused=True, foreach=True)
    with pytest.raises(RuntimeError) as theirs:
        torch.optim.Adagrad(params, fused=True, foreach=True)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="empty parameter list"):
        fusedopt.optim.Adagrad([], lr=0.1)
    with pytest.raises(RuntimeError, match="differentiable"):
        fusedopt.optim.Adagrad(params, differentiable=True)
    opt = fusedopt.optim.Adagrad(params, fused=True)
    assert opt.defaults["fused"] is True


@pytest.mark.parametrize("bad", ["sparse", "complex", "step", "shape"])
def test_bad_input_in_a_later_group_modifies_nothing(bad):
    """sparse: torch's for-loop Adagrad takes sparse grads; the fused step refuses them."""
    check_bad_input_in_later_group_modifies_nothing(fusedopt.optim.Adagrad, bad, kwargs=dict(lr=0.1),
                                                    state_keys=("sum",))


def _lists(n=3, dtype=torch.float32):
    return [torch.full((5,), 2.0, dtype=dtype) for _ in range(n)]


OP_ERRORS = [
    ("length", lambda: (_lists(), _lists(2), _lists(), [torch.zeros(())] * 3), {}, "grads has 2 tensors"),
    ("sums_missing", lambda: (_lists(), _lists(), [], [torch.zeros(())] * 3), {}, "state_sums has 0 tensors"),
    ("dtype", lambda: (_lists(), _lists(), _lists()[:2] + [torch.ones(5, dtype=torch.float64)],
                       [torch.zeros(())] * 3), {}, "state_sums\\[2\\] has dtype Double"),
    ("steps_missing", lambda: (_lists(), _lists(), _lists(), [torch.zeros(())] * 2), {}, "state_steps has 2 tensors"),
    ("step_dtype", lambda: (_lists(), _lists(), _lists(), [torch.zeros(())] * 2 + [torch.zeros((), dtype=torch.int64)]),
     {}, "state_steps\\[2\\] has dtype Long"),
    ("sparse", lambda: (_lists(), _lists()[:2] + [torch.ones(5).to_sparse()], _lists(), [torch.zeros(())] * 3),
     {}, "sparse"),
    ("found_inf_numel", lambda: (_lists(), _lists(), _lists(), [torch.zeros(())] * 3),
     dict(found_inf=torch.zeros(2)), "found_inf has 2 elements"),
]


@pytest.mark.parametrize("name,make,extra,message", OP_ERRORS, ids=[e[0] for e in OP_ERRORS])
def test_op_rejects_bad_input_before_writing(name, make, extra, message):
    lists = [list(lst) for lst in make()]
    lists[3] = [s.clone() for s in lists[3]]  # distinct step tensors
    assert_op_rejects_before_writing(torch.ops.fusedopt.adagrad_, lists, _op_kwargs(**extra), message)


# ---------------------------------------------------------------------------------------------
# The op as a torch custom op


def _opcheck_samples(device):
    gen = torch.Generator().manual_seed(0)
    shapes = [(3,), (2, 5), (0,), ()]
    mk = lambda: [make_tensor(s, torch.float32, device, generator=gen) for s in shapes]  # noqa: E731
    mk_sum = lambda: [t.abs() for t in mk()]  # noqa: E731
    steps = lambda: [torch.full((), float(i), device=device) for i in range(len(shapes))]  # noqa: E731
    yield (mk(), mk(), mk_sum(), steps()), _op_kwargs()
    yield (mk(), mk(), mk_sum(), steps()), _op_kwargs(lr_decay=0.3, weight_decay=0.1, maximize=True)
    yield (mk(), mk(), mk_sum(), steps()), _op_kwargs(
        lr_tensor=torch.tensor(0.3, device=device), grad_scale=torch.tensor(4.0, device=device),
        found_inf=torch.tensor(0.0, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for args, kwargs in _opcheck_samples(device):
        torch.library.opcheck(torch.ops.fusedopt.adagrad_.default, args, kwargs)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_capture_replays_steps_and_found_inf():
    params = [torch.randn(n, device="cuda") for n in (1000, 3, 70000)]
    grads = [torch.randn_like(p) for p in params]
    sums = [torch.full_like(p, 0.1) for p in params]
    steps = [torch.zeros((), device="cuda") for _ in params]
    lr = torch.tensor(0.05, device="cuda")
    found_inf = torch.zeros((), device="cuda")
    ref = [p.clone() for p in params], [s.clone() for s in sums], [s.clone() for s in steps]
    kw = _op_kwargs(lr_decay=0.1, lr_tensor=lr, found_inf=found_inf)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch.ops.fusedopt.adagrad_(params, grads, sums, steps, **kw)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.ops.fusedopt.adagrad_(params, grads, sums, steps, **kw)
    for step_lr, inf in ((0.05, 0.0), (0.02, 1.0), (0.01, 0.0)):
        lr.fill_(step_lr)
        found_inf.fill_(inf)
        graph.replay()
    for step_lr in (0.05, 0.05, 0.01):
        torch.ops.fusedopt.adagrad_(ref[0], grads, ref[1], ref[2], **_op_kwargs(lr_decay=0.1, lr=step_lr))
    torch.cuda.synchronize()
    for a, b in zip(params, ref[0]):
        torch.testing.assert_close(a, b)
    assert all(t.item() == 3 for t in steps)
