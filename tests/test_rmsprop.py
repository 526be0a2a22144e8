"""fusedopt.optim.RMSprop and torch.ops.fusedopt.rmsprop_ against torch.optim.RMSprop."""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch

import fusedopt
from conftest import DEVICES, DTYPES, make_tensor, param_zoo
from optim_parity import (NativeReference, assert_op_rejects_before_writing, Float32Reference, assert_close, check_bad_input_in_later_group_modifies_nothing,
                          check_grad_scaler_matches_torch, check_op_unscales_and_skips, exact_sqrt, fresh_model,
                          train)

# alpha 0.3 takes lerp_'s other branch (weight 1 - alpha >= 0.5) in the centered average.
OPTION_COMBOS = [
    dict(centered=c, momentum=m, weight_decay=wd, maximize=mx, alpha=a)
    for c, m, wd, mx, a in itertools.product([False, True], [0.0, 0.9], [0.0, 0.01], [False, True], [0.99, 0.3])
]


def _combo_id(c):
    return "-".join(f"{k}={v}" for k, v in c.items() if v and not (k == "alpha" and v == 0.99)) or "plain"


def _mirror_step(params, grads, state, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    """torch.optim.RMSprop's single-tensor path, op by op, with a correctly rounded sqrt."""
    for p, g in zip(params, grads):
        if g is None:
            continue
        s = state.setdefault(id(p), dict(step=0, square_avg=torch.zeros_like(p),
                                         momentum_buffer=torch.zeros_like(p), grad_avg=torch.zeros_like(p)))
        s["step"] += 1
        grad = -g if maximize else g
        if weight_decay != 0:
            grad = grad.add(p, alpha=weight_decay)
        sq = s["square_avg"]
        sq.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if centered:
            s["grad_avg"].lerp_(grad, 1 - alpha)
            avg = exact_sqrt(sq.addcmul(s["grad_avg"], s["grad_avg"], value=-1))
        else:
            avg = exact_sqrt(sq)
        avg = avg.add_(eps)
        if momentum > 0:
            s["momentum_buffer"].mul_(momentum).addcdiv_(grad, avg)
            p.add_(s["momentum_buffer"], alpha=-lr)
        else:
            p.addcdiv_(grad, avg, value=-lr)


@pytest.mark.skipif(fusedopt.cpu_capability() == "DEFAULT", reason="needs the fma of the AVX2/AVX512 kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_bitwise_equal_to_torch_ops_with_exact_sqrt(dtype):
    """On CPU the update follows torch's single-tensor path operation by operation (with ATen's fmas):
    bitwise equal to it once torch's sqrt is replaced by a correctly rounded one."""
    for options in OPTION_COMBOS:
        params = param_zoo(dtype, "cpu", seed=5)
        ours, theirs = [p.clone() for p in params], [p.clone() for p in params]
        opt = fusedopt.optim.RMSprop(ours, lr=0.03, eps=1e-3, **options)
        state = {}
        gen = torch.Generator().manual_seed(6)
        for step in range(8):
            grads = [None if (step == 2 and i % 3 == 0) else make_tensor(p.shape, dtype, "cpu", generator=gen)
                     for i, p in enumerate(ours)]
            for p, g in zip(ours, grads):
                p.grad = None if g is None else g.clone()
            opt.step()
            _mirror_step(theirs, grads, state, lr=0.03, eps=1e-3, **options)
        for i, (p, q) in enumerate(zip(ours, theirs)):
            assert torch.equal(p, q), (_combo_id(options), i, p.shape, (p - q).abs().max())
            s = state[id(q)]
            assert opt.state[p]["step"].item() == s["step"]
            assert torch.equal(opt.state[p]["square_avg"], s["square_avg"])
            if options["centered"]:
                assert torch.equal(opt.state[p]["grad_avg"], s["grad_avg"])
            if options["momentum"]:
                assert torch.equal(opt.state[p]["momentum_buffer"], s["momentum_buffer"])


def _run_parity(device, dtype, options, steps, seed, lr=None, none_grads=True):
    rng = random.Random(seed)
    lr = lr if lr is not None else rng.uniform(0.001, 0.05)
    params = param_zoo(dtype, device, seed)
    ours = [p.clone() for p in params]
    opt = fusedopt.optim.RMSprop(ours, lr=lr, **options)
    half = dtype in (torch.float16, torch.bfloat16)
    if half:
        ref = Float32Reference(torch.optim.RMSprop, params, dtype, lr=lr, **options)
        ref_params, ref_opt, step_ref = ref.params, ref.opt, ref.step
    else:
        ref_params = [p.clone() for p in params]
        ref_opt = torch.optim.RMSprop(ref_params, lr=lr, **options)

        def step_ref(grads):
            for p, g in zip(ref_params, grads):
                p.grad = None if g is None else g.clone()
            ref_opt.step()

    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        grads = [None if (none_grads and (i + step) % 7 == 0) else make_tensor(p.shape, dtype, device, generator=gen)
                 for i, p in enumerate(ours)]
        for p, g in zip(ours, grads):
            p.grad = None if g is None else g.clone()
        opt.step()
        step_ref(grads)
    for i, (a, b) in enumerate(zip(ours, ref_params)):
        assert a.stride() == params[i].stride(), "the step must not change a param's layout"
        assert_close(a, b, dtype, msg=f"param {i} shape {tuple(a.shape)} stride {a.stride()}")
        sa, sb = opt.state[a], ref_opt.state[b]
        assert sa.keys() == sb.keys()
        assert sa["step"].item() == sb["step"].item()
        assert sa["step"].device == a.device and sa["step"].dtype == torch.float32
        for key in ("square_avg", "momentum_buffer", "grad_avg"):
            if key in sb:
                assert_close(sa[key], sb[key], dtype, msg=key)


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
    options.update(alpha=rng.uniform(0.2, 0.999), eps=rng.choice([1e-8, 1e-3]),
                   momentum=options["momentum"] and rng.uniform(0.1, 0.99),
                   weight_decay=options["weight_decay"] and rng.uniform(1e-4, 0.1))
    _run_parity(device, dtype, options, steps=30, seed=seed)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_and_many_tensors_in_one_group(device):
    """2,000+ tensors of four dtypes in one call (more than one CUDA launch's table holds)."""
    gen = torch.Generator().manual_seed(3)
    params = [make_tensor((random.Random(i).randint(1, 300),), DTYPES[i % 4], device, generator=gen)
              for i in range(2100)]
    ours = [p.clone() for p in params]
    kwargs = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=1e-3)
    opt = fusedopt.optim.RMSprop(ours, **kwargs)
    refs = [NativeReference(torch.optim.RMSprop, [p], **kwargs) if p.dtype == torch.float64
            else Float32Reference(torch.optim.RMSprop, [p], p.dtype, **kwargs) for p in params]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in ours]
        for p, g in zip(ours, grads):
            p.grad = g
        opt.step()
        for r, g in zip(refs, grads):
            r.step([g])
    for p, r in zip(ours, refs):
        assert_close(p, r.params[0], p.dtype)  # float64 against torch in float64
        assert opt.state[p]["step"].item() == 3


@pytest.mark.parametrize("device", DEVICES)
def test_param_groups_closure_and_scheduler(device):
    results = []
    for cls in (torch.optim.RMSprop, fusedopt.optim.RMSprop):
        model = fresh_model(device)
        opt = cls([{"params": model[0].parameters(), "lr": 0.02, "momentum": 0.9, "centered": True},
                   {"params": model[2].parameters(), "weight_decay": 0.1, "alpha": 0.5}], lr=0.01)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        train(model, opt, 10, device, closure=True, scheduler=sched)
        results.append((model, opt))
    (m_ref, o_ref), (m, o) = results
    for a, b in zip(m.parameters(), m_ref.parameters()):
        assert_close(a, b, torch.float32)
    assert [g["lr"] for g in o.param_groups] == [g["lr"] for g in o_ref.param_groups]


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_lr(device):
    results = []
    for cls in (torch.optim.RMSprop, fusedopt.optim.RMSprop):
        model = fresh_model(device)
        opt = cls(model.parameters(), lr=torch.tensor(0.01, device=device), momentum=0.5)
        train(model, opt, 3, device)
        opt.param_groups[0]["lr"].fill_(0.003)  # changed in place, as a captured graph would see it
        train(model, opt, 3, device, seed=2)
        results.append(model)
    for a, b in zip(results[1].parameters(), results[0].parameters()):
        assert_close(a, b, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoints_move_both_ways(device):
    """state_dicts have torch's layout: torch -> fusedopt -> torch mid-training equals torch alone.
    torch's for-loop RMSprop keeps 'step' on the CPU; fusedopt moves it to the param's device."""
    kwargs = dict(lr=0.01, momentum=0.9, centered=True, weight_decay=1e-2)
    model = fresh_model(device)
    opt = torch.optim.RMSprop(model.parameters(), **kwargs)
    train(model, opt, 3, device)
    for dst_cls, seed in ((fusedopt.optim.RMSprop, 1), (torch.optim.RMSprop, 2)):
        sd = copy.deepcopy(opt.state_dict())
        opt = dst_cls(model.parameters(), **kwargs)
        opt.load_state_dict(sd)
        state = opt.state_dict()
        assert set(state["state"][0]) == {"step", "square_avg", "momentum_buffer", "grad_avg"}
        assert state["param_groups"] == sd["param_groups"]
        if dst_cls is fusedopt.optim.RMSprop:
            for p in model.parameters():
                assert opt.state[p]["step"].device == p.device and opt.state[p]["step"].item() == 3
        train(model, opt, 3, device, seed=seed)
    model_ref = fresh_model(device)
    opt_ref = torch.optim.RMSprop(model_ref.parameters(), **kwargs)
    for seed in (0, 1, 2):
        train(model_ref, opt_ref, 3, device, seed=seed)
    for a, b in zip(model.parameters(), model_ref.parameters()):
        assert_close(a, b, torch.float32)
    for p, q in zip(model.parameters(), model_ref.parameters()):
        assert opt.state[p]["step"].item() == opt_ref.state[q]["step"].item() == 9


def test_step_on_cpu_set_by_hand_is_moved_before_the_step():
    p = torch.randn(5)
    opt = fusedopt.optim.RMSprop([p], lr=0.01)
    p.grad = torch.randn(5)
    opt.step()
    opt.state[p]["step"] = torch.tensor(4.0, dtype=torch.float64)
    opt.step()
    assert opt.state[p]["step"].dtype == torch.float32 and opt.state[p]["step"].item() == 5


def test_state_dict_keys_and_param_groups_equal_torch():
    model = fresh_model("cpu")
    sds = []
    for cls in (torch.optim.RMSprop, fusedopt.optim.RMSprop):
        m = copy.deepcopy(model)
        opt = cls(m.parameters(), lr=0.01, momentum=0.9, centered=True)
        train(m, opt, 1, "cpu")
        sds.append(opt.state_dict())
    assert sds[0]["param_groups"] == sds[1]["param_groups"]
    assert sds[0]["state"].keys() == sds[1]["state"].keys()
    for k in sds[0]["state"]:
        assert list(sds[0]["state"][k]) == list(sds[1]["state"][k])
        assert sds[1]["state"][k]["step"].dtype == torch.float32 and sds[1]["state"][k]["step"].dim() == 0
    assert isinstance(fusedopt.optim.RMSprop(model.parameters()), torch.optim.RMSprop)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum,centered", [(0.0, False), (0.9, True)])
def test_grad_scaler_unscales_in_kernel_and_skips_nonfinite_steps(device, momentum, centered):
    """With torch.amp.GradScaler the step unscales grads inside the kernel; a step with an inf grad
    changes nothing (params, state, step counts) and the scale backs off, as with torch."""
    kwargs = dict(lr=0.01, momentum=momentum, centered=centered)
    check_grad_scaler_matches_torch(device, lambda ps: fusedopt.optim.RMSprop(ps, **kwargs),
                                    [lambda ps: torch.optim.RMSprop(ps, **kwargs)],
                                    no_state_after_skipped_first_step=True, expected_steps=4)


def _op_kwargs(**over):
    kw = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False)
    kw.update(over)
    return kw


@pytest.mark.parametrize("device", DEVICES)
def test_op_grad_scale_and_found_inf(device):
    p = make_tensor((100,), torch.float32, device)
    g = make_tensor((100,), torch.float32, device) * 8
    sq = torch.zeros_like(p)
    step = torch.zeros((), device=device)
    p0, g0 = p.clone(), g.clone()
    check_op_unscales_and_skips(
        device, lambda **amp: torch.ops.fusedopt.rmsprop_([p], [g], [sq], [], [], [step], **_op_kwargs(), **amp),
        [p, sq], [g], steps=[step])
    expected_sq = 0.1 * (g0 / 8) ** 2
    assert_close(sq, expected_sq, torch.float32)
    assert_close(p, p0 - 0.01 * (g0 / 8) / (expected_sq.sqrt() + 1e-8), torch.float32)


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, raised before anything is modified


def test_constructor_errors_match_torch():
    params = [torch.zeros(3, requires_grad=True)]
    cases = [dict(lr=-1.0), dict(eps=-1.0), dict(momentum=-0.1), dict(weight_decay=-1.0), dict(alpha=-0.5),
             dict(lr=torch.tensor([0.1, 0.2]))]
    for kwargs in cases:
        with pytest.raises(ValueError) as ours:
            fusedopt.optim.RMSprop(params, **kwargs)
        with pytest.raises(ValueError) as theirs:
            torch.optim.RMSprop(params, **kwargs)
        assert str(ours.value) == str(theirs.value), kwargs
    with pytest.raises(ValueError, match="empty parameter list"):
        fusedopt.optim.RMSprop([], lr=0.1)
    with pytest.raises(RuntimeError, match="differentiable"):
        fusedopt.optim.RMSprop(params, differentiable=True)
    opt = fusedopt.optim.RMSprop(params, foreach=True, capturable=True)
    assert opt.defaults["foreach"] is True and opt.defaults["capturable"] is True


@pytest.mark.parametrize("bad", ["sparse", "complex", "step", "shape"])
def test_bad_input_in_a_later_group_modifies_nothing(bad):
    check_bad_input_in_later_group_modifies_nothing(fusedopt.optim.RMSprop, bad,
                                                    kwargs=dict(lr=0.1, momentum=0.9, centered=True),
                                                    state_keys=("square_avg", "momentum_buffer", "grad_avg"))


def _lists(n=3, dtype=torch.float32):
    return [torch.full((5,), 2.0, dtype=dtype) for _ in range(n)]


OP_ERRORS = [
    ("length", lambda: (_lists(), _lists(2), _lists(), [], [], [torch.zeros(())] * 3), {},
     "grads has 2 tensors but params has 3"),
    ("momentum_without_buffers", lambda: (_lists(), _lists(), _lists(), [], [], [torch.zeros(())] * 3),
     dict(momentum=0.9), "momentum_buffers has 0 tensors"),
    ("centered_without_averages", lambda: (_lists(), _lists(), _lists(), [], [], [torch.zeros(())] * 3),
     dict(centered=True), "grad_avgs has 0 tensors"),
    ("dtype", lambda: (_lists(), _lists(), _lists()[:2] + [torch.ones(5, dtype=torch.float64)], [], [],
                       [torch.zeros(())] * 3), {}, "square_avgs\\[2\\] has dtype Double"),
    ("steps_missing", lambda: (_lists(), _lists(), _lists(), [], [], [torch.zeros(())] * 2), {},
     "state_steps has 2 tensors"),
    ("step_dtype", lambda: (_lists(), _lists(), _lists(), [], [], [torch.zeros(())] * 2 + [torch.zeros((), dtype=torch.float64)]),
     {}, "state_steps\\[2\\] has dtype Double"),
    ("step_numel", lambda: (_lists(), _lists(), _lists(), [], [], [torch.zeros(())] * 2 + [torch.zeros(2)]),
     {}, "state_steps\\[2\\] has 2 elements"),
    ("sparse", lambda: (_lists(), _lists()[:2] + [torch.ones(5).to_sparse()], _lists(), [], [],
                        [torch.zeros(())] * 3), {}, "sparse"),
    ("complex", lambda: (_lists(2) + [torch.ones(5, dtype=torch.complex64)],
                         _lists(2) + [torch.ones(5, dtype=torch.complex64)],
                         _lists(2) + [torch.ones(5, dtype=torch.complex64)], [], [], [torch.zeros(())] * 3),
     {}, "complex"),
    ("lr_tensor_dtype", lambda: (_lists(), _lists(), _lists(), [], [], [torch.zeros(())] * 3),
     dict(lr_tensor=torch.tensor(0.1, dtype=torch.float64)), "lr_tensor has dtype Double"),
]


@pytest.mark.parametrize("name,make,extra,message", OP_ERRORS, ids=[e[0] for e in OP_ERRORS])
def test_op_rejects_bad_input_before_writing(name, make, extra, message):
    lists = [list(lst) for lst in make()]
    lists[5] = [s.clone() for s in lists[5]]  # distinct step tensors
    assert_op_rejects_before_writing(torch.ops.fusedopt.rmsprop_, lists, _op_kwargs(**extra), message)


# ---------------------------------------------------------------------------------------------
# The op as a torch custom op


def _opcheck_samples(device):
    gen = torch.Generator().manual_seed(0)
    shapes = [(3,), (2, 5), (0,), ()]
    mk = lambda: [make_tensor(s, torch.float32, device, generator=gen) for s in shapes]  # noqa: E731
    mk_sq = lambda: [t.abs() for t in mk()]  # noqa: E731
    steps = lambda: [torch.zeros((), device=device) for _ in shapes]  # noqa: E731
    yield (mk(), mk(), mk_sq(), [], [], steps()), _op_kwargs()
    yield (mk(), mk(), mk_sq(), mk(), mk(), steps()), _op_kwargs(momentum=0.9, centered=True, weight_decay=0.1,
                                                                 maximize=True, eps=1.0)
    yield (mk(), mk(), mk_sq(), mk(), [], steps()), _op_kwargs(
        momentum=0.5, lr_tensor=torch.tensor(0.3, device=device), grad_scale=torch.tensor(4.0, device=device),
        found_inf=torch.tensor(0.0, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for args, kwargs in _opcheck_samples(device):
        torch.library.opcheck(torch.ops.fusedopt.rmsprop_.default, args, kwargs)


# ---------------------------------------------------------------------------------------------
# CUDA specifics


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_capture_replays_steps_and_found_inf():
    params = [torch.randn(n, device="cuda") for n in (1000, 3, 70000)]
    grads = [torch.randn_like(p) for p in params]
    sqs = [torch.zeros_like(p) for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    steps = [torch.zeros((), device="cuda") for _ in params]
    lr = torch.tensor(0.01, device="cuda")
    found_inf = torch.zeros((), device="cuda")
    ref = [p.clone() for p in params], [s.clone() for s in sqs], [b.clone() for b in bufs], [s.clone() for s in steps]
    kw = _op_kwargs(momentum=0.9, lr_tensor=lr, found_inf=found_inf)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up on a side stream, as capture requires
        torch.ops.fusedopt.rmsprop_(params, grads, sqs, bufs, [], steps, **kw)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.ops.fusedopt.rmsprop_(params, grads, sqs, bufs, [], steps, **kw)
    for step_lr, inf in ((0.01, 0.0), (0.02, 1.0), (0.005, 0.0)):
        lr.fill_(step_lr)
        found_inf.fill_(inf)
        graph.replay()
    for step_lr in (0.01, 0.01, 0.005):  # warm-up, then the replays that were not skipped
        torch.ops.fusedopt.rmsprop_(ref[0], grads, ref[1], ref[2], [], ref[3], **_op_kwargs(momentum=0.9, lr=step_lr))
    torch.cuda.synchronize()
    for a, b in zip(params, ref[0]):
        torch.testing.assert_close(a, b)
    assert all(t.item() == 3 for t in steps)
