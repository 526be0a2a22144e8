"""fusedopt.optim.SGD and torch.ops.fusedopt.sgd_ against torch.optim.SGD."""

from __future__ import annotations

import copy
import itertools
import random
import zlib

import pytest
import torch

import fusedopt
from conftest import DEVICES, DTYPES, assert_close, make_tensor, param_zoo
from optim_parity import (NativeReference, assert_op_rejects_before_writing, check_bad_input_in_later_group_modifies_nothing, check_grad_scaler_matches_torch,
                          check_op_unscales_and_skips, fresh_model, train)

# Every valid combination of the options (torch: Nesterov needs momentum > 0 and no dampening).
OPTION_COMBOS = [
    dict(momentum=m, dampening=d, nesterov=n, weight_decay=wd, maximize=mx)
    for m, d, n, wd, mx in itertools.product([0.0, 0.9], [0.0, 0.25], [False, True], [0.0, 0.01],
                                              [False, True])
    if not (n and (m == 0 or d != 0))
]


def _combo_id(c):
    return "-".join(f"{k}={v}" for k, v in c.items() if v) or "plain"


class Float32Reference:
    """torch.optim.SGD (single-tensor path) on float32 copies, rounded to `dtype` after every step.

    This is the math fused kernels do for float16/bfloat16: load, compute in float32, store rounded.
    torch's own fused CPU SGD is not usable as the reference there: in torch 2.13 it returns wrong
    values for float16/bfloat16 tensors longer than one SIMD register (see
    test_half_precision_follows_float32_math)."""

    def __init__(self, params, dtype, **kwargs):
        self.dtype = dtype
        self.params = [p.detach().float() for p in params]
        self.opt = torch.optim.SGD(self.params, **kwargs)

    def step(self, grads):
        for p, g in zip(self.params, grads):
            p.grad = g.float()
        self.opt.step()
        with torch.no_grad():
            for p in self.params:
                p.copy_(p.to(self.dtype))
                buf = self.opt.state[p].get("momentum_buffer")
                if buf is not None:
                    buf.copy_(buf.to(self.dtype))


def _run_parity(device, dtype, options, steps, seed, lr=None):
    rng = random.Random(seed)
    lr = lr if lr is not None else rng.uniform(0.001, 0.2)
    params = param_zoo(dtype, device, seed)
    ours = [p.clone() for p in params]
    opt = fusedopt.optim.SGD(ours, lr=lr, **options)
    if dtype in (torch.float16, torch.bfloat16):
        ref = Float32Reference(params, dtype, lr=lr, **options)
        ref_params = ref.params
        step_ref = ref.step
    else:
        ref_params = [p.clone() for p in params]
        ref_opt = torch.optim.SGD(ref_params, lr=lr, **options)

        def step_ref(grads):
            for p, g in zip(ref_params, grads):
                p.grad = g.clone()
            ref_opt.step()

    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        grads = [make_tensor(p.shape, dtype, device, generator=gen) for p in ours]
        for p, g in zip(ours, grads):
            p.grad = g.clone()
        opt.step()
        step_ref(grads)
    for i, (a, b) in enumerate(zip(ours, ref_params)):
        assert a.stride() == params[i].stride(), "the step must not change a param's layout"
        assert_close(a, b, dtype, msg=f"param {i} shape {tuple(a.shape)} stride {a.stride()}")
    if options["momentum"]:
        ref_state = ref_opt.state if dtype not in (torch.float16, torch.bfloat16) else ref.opt.state
        for a, b in zip(ours, ref_params):
            assert_close(opt.state[a]["momentum_buffer"], ref_state[b]["momentum_buffer"], dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", OPTION_COMBOS, ids=_combo_id)
def test_matches_torch_every_option_float32(device, options):
    _run_parity(device, torch.float32, options, steps=25, seed=zlib.crc32(_combo_id(options).encode()) % 1000)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", range(4))
def test_matches_torch_random_options_every_dtype(device, dtype, seed):
    rng = random.Random(seed)
    options = rng.choice(OPTION_COMBOS)
    options = dict(options, momentum=options["momentum"] and rng.uniform(0.5, 0.99),
                   weight_decay=options["weight_decay"] and rng.uniform(1e-4, 0.1))
    _run_parity(device, dtype, options, steps=30, seed=seed)


@pytest.mark.skipif(fusedopt.cpu_capability() == "DEFAULT", reason="needs the fma of the AVX2/AVX512 kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_bitwise_equal_to_torch_for_loop(dtype):
    """On CPU the update follows torch's single-tensor path operation by operation (with its fmas), so
    float32 and float64 results are identical to the last bit, for every option combination."""
    for options in OPTION_COMBOS:
        params = param_zoo(dtype, "cpu", seed=5)
        ours, theirs = [p.clone() for p in params], [p.clone() for p in params]
        a = fusedopt.optim.SGD(ours, lr=0.07, **options)
        b = torch.optim.SGD(theirs, lr=0.07, **options)
        gen = torch.Generator().manual_seed(6)
        for _ in range(10):
            for p, q in zip(ours, theirs):
                p.grad = make_tensor(p.shape, dtype, "cpu", generator=gen)
                q.grad = p.grad.clone()
            a.step()
            b.step()
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q), _combo_id(options)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_follows_float32_math(dtype):
    """float16/bfloat16 params stay within one ulp of the float32 math rounded after every step. (This
    is our reference rather than torch's fused CPU SGD, whose half-precision results drift from it in
    torch 2.13, an upstream bug.)"""
    torch.manual_seed(0)
    p0 = torch.randn(1000, dtype=dtype)
    ours = p0.clone()
    ref = Float32Reference([p0], dtype, lr=0.1, momentum=0.9)
    opt = fusedopt.optim.SGD([ours], lr=0.1, momentum=0.9)
    for _ in range(5):
        g = torch.randn(1000, dtype=dtype)
        ours.grad = g.clone()
        opt.step()
        ref.step([g])
    assert_close(ours, ref.params[0], dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_and_many_tensors_in_one_group(device):
    """2,000+ tensors of four dtypes in one call: one parallel region (CPU) or few launches (CUDA),
    more tensors than one CUDA launch's table holds."""
    gen = torch.Generator().manual_seed(3)
    params = [make_tensor((random.Random(i).randint(1, 300),), DTYPES[i % 4], device, generator=gen)
              for i in range(2100)]
    ours = [p.clone() for p in params]
    opt = fusedopt.optim.SGD(ours, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    kwargs = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    refs = [NativeReference(torch.optim.SGD, [p], **kwargs) if p.dtype == torch.float64
            else Float32Reference([p], p.dtype, **kwargs) for p in params]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in ours]
        for p, g in zip(ours, grads):
            p.grad = g
        opt.step()
        for r, g in zip(refs, grads):
            r.step([g])
    for p, r in zip(ours, refs):
        assert_close(p, r.params[0], p.dtype)  # float64 against torch in float64


@pytest.mark.parametrize("device", DEVICES)
def test_param_groups_closure_and_scheduler(device):
    results = []
    for cls in (torch.optim.SGD, fusedopt.optim.SGD):
        model = fresh_model(device)
        opt = cls([{"params": model[0].parameters(), "lr": 0.05, "momentum": 0.9, "nesterov": True},
                   {"params": model[2].parameters(), "weight_decay": 0.1, "dampening": 0.5,
                    "momentum": 0.5}], lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        train(model, opt, 10, device, closure=True, scheduler=sched)
        results.append((model, opt))
    (m_ref, o_ref), (m, o) = results
    for a, b in zip(m.parameters(), m_ref.parameters()):
        assert_close(a, b, torch.float32)
    assert [g["lr"] for g in o.param_groups] == [g["lr"] for g in o_ref.param_groups]


@pytest.mark.parametrize("device", DEVICES)
def test_add_param_group_mid_training_starts_its_momentum(device):
    """A group added later takes its first momentum step while the others continue theirs."""
    results = []
    for cls in (torch.optim.SGD, fusedopt.optim.SGD):
        model = fresh_model(device)
        opt = cls(model[0].parameters(), lr=0.1, momentum=0.9)
        for p in model[2].parameters():
            p.requires_grad_(False)
        train(model, opt, 3, device)
        for p in model[2].parameters():
            p.requires_grad_(True)
        opt.add_param_group({"params": model[2].parameters(), "momentum": 0.8})
        train(model, opt, 3, device, seed=1)
        results.append(model)
    for a, b in zip(results[1].parameters(), results[0].parameters()):
        assert_close(a, b, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_params_without_grad_are_skipped_and_buffers_start_late(device):
    """A param whose grad is None one step gets no buffer; when it gets a grad later, its first step
    initialises its buffer while the others continue (two calls of the op in one group)."""
    params = [make_tensor((5,), torch.float32, device) for _ in range(3)]
    ours = [p.clone() for p in params]
    theirs = [p.clone() for p in params]
    a = fusedopt.optim.SGD(ours, lr=0.1, momentum=0.9, dampening=0.1)
    b = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, dampening=0.1)
    for step in range(4):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            g = torch.randn_like(p) if (i != 1 or step >= 2) else None
            p.grad, q.grad = g, (g.clone() if g is not None else None)
        a.step()
        b.step()
        assert (ours[1] in a.state) == (theirs[1] in b.state)
    for p, q in zip(ours, theirs):
        assert_close(p, q, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_lr(device):
    lr = torch.tensor(0.05, device=device)
    results = []
    for cls in (torch.optim.SGD, fusedopt.optim.SGD):
        model = fresh_model(device)
        opt = cls(model.parameters(), lr=lr.clone(), momentum=0.9)
        train(model, opt, 3, device)
        opt.param_groups[0]["lr"].fill_(0.01)  # changed in place, as a captured graph would see it
        train(model, opt, 3, device, seed=2)
        results.append(model)
    for a, b in zip(results[1].parameters(), results[0].parameters()):
        assert_close(a, b, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoints_move_both_ways(device):
    """state_dicts have torch's layout: torch -> fusedopt -> torch mid-training equals torch alone."""
    kwargs = dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True)
    model = fresh_model(device)
    opt = torch.optim.SGD(model.parameters(), **kwargs)
    train(model, opt, 3, device)
    for src_cls, dst_cls, seed in ((torch.optim.SGD, fusedopt.optim.SGD, 1),
                                   (fusedopt.optim.SGD, torch.optim.SGD, 2)):
        sd = copy.deepcopy(opt.state_dict())
        opt = dst_cls(model.parameters(), **kwargs)
        opt.load_state_dict(sd)
        assert set(opt.state_dict()["state"][0]) == {"momentum_buffer"}
        assert opt.state_dict()["param_groups"] == sd["param_groups"]
        train(model, opt, 3, device, seed=seed)
    model_ref = fresh_model(device)
    opt_ref = torch.optim.SGD(model_ref.parameters(), **kwargs)
    for seed in (0, 1, 2):
        train(model_ref, opt_ref, 3, device, seed=seed)
    for a, b in zip(model.parameters(), model_ref.parameters()):
        assert_close(a, b, torch.float32)


def test_state_dict_keys_and_param_groups_equal_torch():
    model = fresh_model("cpu")
    sds = []
    for cls in (torch.optim.SGD, fusedopt.optim.SGD):
        torch.manual_seed(0)
        m = copy.deepcopy(model)
        opt = cls(m.parameters(), lr=0.1, momentum=0.9)
        train(m, opt, 1, "cpu")
        sds.append(opt.state_dict())
    assert sds[0]["param_groups"] == sds[1]["param_groups"]
    assert sds[0]["state"].keys() == sds[1]["state"].keys()
    for k in sds[0]["state"]:
        assert sds[0]["state"][k].keys() == sds[1]["state"][k].keys()
    assert isinstance(fusedopt.optim.SGD(model.parameters()), torch.optim.SGD)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_grad_scaler_unscales_in_kernel_and_skips_nonfinite_steps(device, momentum):
    """With torch.amp.GradScaler the step unscales grads inside the kernel; a step with an inf grad
    changes nothing (params, buffers, grads stay scaled) and the scale backs off, as with torch.
    A skipped first step creates no momentum buffers."""
    check_grad_scaler_matches_torch(
        device, lambda ps: fusedopt.optim.SGD(ps, lr=0.05, momentum=momentum),
        [lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=momentum)],
        no_state_after_skipped_first_step=bool(momentum), close=assert_close)


@pytest.mark.parametrize("device", DEVICES)
def test_op_grad_scale_and_found_inf(device):
    p = make_tensor((100,), torch.float32, device)
    g = make_tensor((100,), torch.float32, device) * 8
    p0, g0 = p.clone(), g.clone()
    kwargs = dict(lr=0.1, weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=False,
                  maximize=False, is_first_step=False)
    check_op_unscales_and_skips(device, lambda **amp: torch.ops.fusedopt.sgd_([p], [g], [], **kwargs, **amp),
                                [p], [g], close=assert_close)
    assert_close(p, p0 - 0.1 * g0 / 8, torch.float32)


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, raised before anything is modified


def test_constructor_errors_match_torch():
    params = [torch.zeros(3, requires_grad=True)]
    cases = [dict(lr=-1.0), dict(momentum=-0.1), dict(weight_decay=-1.0),
             dict(nesterov=True, momentum=0.0), dict(nesterov=True, momentum=0.9, dampening=0.1),
             dict(lr=torch.tensor([0.1, 0.2]))]
    for kwargs in cases:
        with pytest.raises(ValueError) as ours:
            fusedopt.optim.SGD(params, **kwargs)
        with pytest.raises(ValueError) as theirs:
            torch.optim.SGD(params, **kwargs)
        assert str(ours.value) == str(theirs.value), kwargs
    with pytest.raises(ValueError, match="empty parameter list"):
        fusedopt.optim.SGD([], lr=0.1)
    with pytest.raises(RuntimeError, match="differentiable"):
        fusedopt.optim.SGD(params, differentiable=True)


@pytest.mark.parametrize("bad", ["sparse", "complex"])
def test_bad_grad_in_a_later_group_modifies_nothing(bad):
    check_bad_input_in_later_group_modifies_nothing(fusedopt.optim.SGD, bad, kwargs=dict(lr=0.1, momentum=0.9))


def test_state_of_wrong_shape_is_rejected_before_any_update():
    check_bad_input_in_later_group_modifies_nothing(fusedopt.optim.SGD, "shape", kwargs=dict(lr=0.1, momentum=0.9),
                                                    state_keys=("momentum_buffer",))


def _op_kwargs(**over):
    kw = dict(lr=0.1, weight_decay=0.0, momentum=0.9, dampening=0.0, nesterov=False, maximize=False,
              is_first_step=False)
    kw.update(over)
    return kw


OP_ERRORS = [
    ("length", lambda: ([torch.ones(3)], [torch.ones(3), torch.ones(3)], [torch.ones(3)]), {},
     "grads has 3 tensors but params has 2"),
    ("momentum_without_buffers", lambda: ([torch.ones(3)], [torch.ones(3)], []), {},
     "momentum_buffers has 0 tensors"),
    ("dtype", lambda: ([torch.ones(3)], [torch.ones(3, dtype=torch.float64)], [torch.ones(3)]), {},
     "grads\\[1\\] has dtype Double"),
    ("int_dtype", lambda: ([torch.ones(3, dtype=torch.int32)], [torch.ones(3, dtype=torch.int32)],
                           [torch.ones(3, dtype=torch.int32)]), {}, "expected float32, float64"),
    ("shape", lambda: ([torch.ones(3)], [torch.ones(4)], [torch.ones(3)]), {}, "has shape"),
    ("layout", lambda: ([torch.ones(3, 4)], [torch.ones(4, 3).t()], [torch.ones(3, 4)]), {},
     "same memory layout"),
    ("gaps", lambda: ([torch.ones(3, 8)[:, ::2]], [torch.ones(3, 4)], [torch.ones(3, 4)]), {},
     "not dense"),
    ("sparse", lambda: ([torch.ones(3)], [torch.ones(3).to_sparse()], [torch.ones(3)]), {}, "sparse"),
    ("complex", lambda: ([torch.ones(3, dtype=torch.complex64)], [torch.ones(3, dtype=torch.complex64)],
                         [torch.ones(3, dtype=torch.complex64)]), {}, "complex"),
    ("lr_tensor_dtype", lambda: ([torch.ones(3)], [torch.ones(3)], [torch.ones(3)]),
     dict(lr_tensor=torch.tensor(0.1, dtype=torch.float64)), "lr_tensor has dtype Double"),
    ("found_inf_numel", lambda: ([torch.ones(3)], [torch.ones(3)], [torch.ones(3)]),
     dict(found_inf=torch.zeros(2)), "found_inf has 2 elements"),
]


@pytest.mark.parametrize("name,make,extra,message", OP_ERRORS, ids=[e[0] for e in OP_ERRORS])
def test_op_rejects_bad_input_before_writing(name, make, extra, message):
    params, grads, bufs = make()
    # A good first entry: it must not have been written when a later entry is rejected.
    params = [torch.full((5,), 2.0)] + params
    grads = [torch.ones(5)] + grads
    bufs = ([torch.ones(5)] + bufs) if bufs or name != "momentum_without_buffers" else bufs
    assert_op_rejects_before_writing(torch.ops.fusedopt.sgd_, [params, grads, bufs], _op_kwargs(**extra),
                                     message)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_a_param_twice_in_a_group_is_an_error(name):
    """torch.optim warns that a param listed twice in a group will be an error, and steps it twice;
    the fused kernels would update it twice at once, so fusedopt raises (constructor and
    add_param_group), leaving the optimizer as it was."""
    p, q = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    with pytest.warns(UserWarning, match="duplicate parameters"):
        getattr(torch.optim, name)([p, q, p], lr=0.1)
    with pytest.raises(ValueError, match="param 2 of the new param group appears earlier"):
        getattr(fusedopt.optim, name)([p, q, p], lr=0.1)
    opt = getattr(fusedopt.optim, name)([p], lr=0.1)
    with pytest.raises(ValueError, match="param 1 of the new param group appears earlier"):
        opt.add_param_group({"params": [q, q]})
    assert len(opt.param_groups) == 1


def test_strided_grads_are_accepted_by_the_optimizer():
    """A grad in another memory order than its param (e.g. assigned by hand) is handled correctly."""
    p = torch.randn(6, 5)
    q = p.clone()
    a = fusedopt.optim.SGD([p], lr=0.1, momentum=0.9)
    b = torch.optim.SGD([q], lr=0.1, momentum=0.9)
    for _ in range(3):
        g = torch.randn(5, 6).t()
        p.grad, q.grad = g, g.clone()
        a.step()
        b.step()
    assert_close(p, q, torch.float32)


# ---------------------------------------------------------------------------------------------
# The op as a torch custom op


def _opcheck_samples(device):
    gen = torch.Generator().manual_seed(0)
    shapes = [(3,), (2, 5), (0,), ()]
    mk = lambda: [make_tensor(s, torch.float32, device, generator=gen) for s in shapes]  # noqa: E731
    yield (mk(), mk(), mk()), _op_kwargs()
    yield (mk(), mk(), mk()), _op_kwargs(is_first_step=True, nesterov=True, weight_decay=0.1)
    yield (mk(), mk(), []), _op_kwargs(momentum=0.0, maximize=True)
    yield (mk(), mk(), mk()), _op_kwargs(lr_tensor=torch.tensor(0.3, device=device),
                                         grad_scale=torch.tensor(4.0, device=device),
                                         found_inf=torch.tensor(0.0, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for args, kwargs in _opcheck_samples(device):
        torch.library.opcheck(torch.ops.fusedopt.sgd_.default, args, kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_step_matches_eager(device):
    def step(params, grads, bufs):
        torch.ops.fusedopt.sgd_(params, grads, bufs, **_op_kwargs(weight_decay=0.01))

    params = [make_tensor((37,), torch.float32, device) for _ in range(3)]
    grads = [torch.randn_like(p) for p in params]
    bufs = [torch.randn_like(p) for p in params]
    eager = [[t.clone() for t in ts] for ts in (params, grads, bufs)]
    step(*eager)
    torch.compile(step, backend="aot_eager", fullgraph=True)(params, grads, bufs)
    for a, b in zip(params + bufs, eager[0] + eager[2]):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# CUDA specifics


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_honours_current_stream():
    p = torch.randn(1 << 20, device="cuda")
    g = torch.randn_like(p)
    expected = p - 0.1 * g
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(10_000_000)  # keeps the side stream busy; a kernel on another stream would race
        torch.ops.fusedopt.sgd_([p], [g], [], **_op_kwargs(momentum=0.0))
        result = p.clone()
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(result, expected)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_capture_replays_with_device_lr():
    params = [torch.randn(n, device="cuda") for n in (1000, 3, 70000)]
    grads = [torch.randn_like(p) for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    lr = torch.tensor(0.1, device="cuda")
    ref = [p.clone() for p in params], [b.clone() for b in bufs]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up on a side stream, as capture requires
        torch.ops.fusedopt.sgd_(params, grads, bufs, **_op_kwargs(lr_tensor=lr))
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.ops.fusedopt.sgd_(params, grads, bufs, **_op_kwargs(lr_tensor=lr))
    for step_lr in (0.1, 0.1, 0.05):
        lr.fill_(step_lr)
        graph.replay()
    # the eager reference: warm-up + capture did not run the op during capture; replays did 3 steps
    for step_lr in (0.1, 0.1, 0.1, 0.05):
        torch.ops.fusedopt.sgd_(ref[0], grads, ref[1], **_op_kwargs(lr=step_lr))
    torch.cuda.synchronize()
    for a, b in zip(params, ref[0]):
        torch.testing.assert_close(a, b)
