"""fusedopt.optim.Adam/AdamW and torch.ops.fusedopt.adam_ against torch.optim.Adam/AdamW."""

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

HALF = (torch.float16, torch.bfloat16)

# Every combination of the boolean options, with and without (decoupled) weight decay.
OPTION_COMBOS = [
    dict(amsgrad=a, maximize=m, weight_decay=wd, decoupled_weight_decay=d)
    for a, m, wd, d in itertools.product([False, True], [False, True], [0.0, 0.05], [False, True])
    if not (d and wd == 0)
]
# betas/eps variations, including beta1 >= 0.5 and < 0.5 (the two branches of ATen's lerp) and 0, and
# 1 - beta1 just below 0.5 in double but 0.5 in float32 (ATen picks the branch on the float32 weight).
BETAS_EPS = [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-3), ((0.3, 0.99), 1e-6), ((0.0, 0.0), 1e-8),
             ((0.95, 0.5), 0.1), ((0.50000001, 0.999), 1e-8)]


def _combo_id(c):
    return "-".join(f"{k}={v}" for k, v in c.items() if v) or "plain"


def _torch_adam(params, **kwargs):
    # torch's single-tensor path: the one our kernels follow operation by operation.
    return torch.optim.Adam(params, foreach=False, **kwargs)


class Float32Reference:
    """torch.optim.Adam (single-tensor path) on float32 copies, params and states rounded to `dtype`
    after every step: the math fused kernels do for float16/bfloat16 (load, compute in float32,
    store rounded)."""

    def __init__(self, params, dtype, round_states=True, **kwargs):
        self.dtype = dtype
        self.round_states = round_states
        self.params = [p.detach().float() for p in params]
        self.opt = _torch_adam(self.params, **kwargs)

    def step(self, grads):
        for p, g in zip(self.params, grads):
            p.grad = None if g is None else g.float()
        self.opt.step()
        with torch.no_grad():
            for p in self.params:
                p.copy_(p.to(self.dtype))
                if self.round_states:
                    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                        t = self.opt.state[p].get(key)
                        if t is not None:
                            t.copy_(t.to(self.dtype))


def _run_parity(device, dtype, options, steps, seed, lr=None, tensor_lr=False, cls=None):
    rng = random.Random(seed)
    lr = lr if lr is not None else rng.uniform(0.001, 0.05)
    if tensor_lr:
        lr = torch.tensor(lr, dtype=torch.float32).item()  # the value a float32 lr tensor holds
    params = param_zoo(dtype, device, seed)
    ours = [p.clone() for p in params]
    our_lr = torch.tensor(lr, device=device) if tensor_lr else lr
    opt = (cls or fusedopt.optim.Adam)(ours, lr=our_lr, **options)
    if dtype in HALF:
        ref = Float32Reference(params, dtype, lr=lr, **options)
        ref_params, ref_state, step_ref = ref.params, ref.opt.state, ref.step
    else:
        ref_params = [p.clone() for p in params]
        ref_opt = _torch_adam(ref_params, lr=lr, **options)
        ref_state = ref_opt.state

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
    # float64: the bias corrections are the same doubles; only the last bits of the chain differ.
    tol = dtype if dtype != torch.float64 else torch.float64
    for i, (a, b) in enumerate(zip(ours, ref_params)):
        assert a.stride() == params[i].stride(), "the step must not change a param's layout"
        assert_close(a, b, tol, msg=f"param {i} shape {tuple(a.shape)} stride {a.stride()}")
    for a, b in zip(ours, ref_params):
        st, rst = opt.state[a], ref_state[b]
        assert st["step"].dtype == torch.float32 and st["step"].device == a.device
        assert st["step"].item() == rst["step"].item() == steps
        keys = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if options.get("amsgrad") else ())
        for key in keys:
            assert_close(st[key], rst[key], tol, msg=key)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", OPTION_COMBOS, ids=_combo_id)
def test_matches_torch_every_option_float32(device, options):
    seed = zlib.crc32(_combo_id(options).encode()) % 1000
    betas, eps = BETAS_EPS[seed % len(BETAS_EPS)]
    _run_parity(device, torch.float32, dict(options, betas=betas, eps=eps), steps=25, seed=seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("betas,eps", BETAS_EPS, ids=str)
def test_matches_torch_betas_and_eps_float64(device, betas, eps):
    _run_parity(device, torch.float64, dict(amsgrad=True, weight_decay=0.01, betas=betas, eps=eps),
                steps=25, seed=7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", range(4))
def test_matches_torch_random_options_every_dtype(device, dtype, seed):
    rng = random.Random(seed)
    options = dict(rng.choice(OPTION_COMBOS))
    if options["weight_decay"]:
        options["weight_decay"] = rng.uniform(1e-4, 0.1)
    betas, eps = rng.choice(BETAS_EPS)
    _run_parity(device, dtype, dict(options, betas=betas, eps=eps), steps=30, seed=seed,
                tensor_lr=bool(seed % 2))


@pytest.mark.parametrize("device", DEVICES)
def test_adamw_class_matches_torch_adamw(device):
    """AdamW's defaults (weight_decay=1e-2, decoupled) against torch.optim.AdamW."""
    params = param_zoo(torch.float32, device, seed=3)
    ours, theirs = [p.clone() for p in params], [p.clone() for p in params]
    a = fusedopt.optim.AdamW(ours, lr=0.01)
    b = torch.optim.AdamW(theirs, lr=0.01, foreach=False)
    assert isinstance(a, torch.optim.AdamW) and isinstance(a, torch.optim.Adam)
    assert a.param_groups[0]["decoupled_weight_decay"]
    assert a.defaults == torch.optim.AdamW([torch.zeros(1)], lr=0.01).defaults
    gen = torch.Generator().manual_seed(4)
    for _ in range(25):
        for p, q in zip(ours, theirs):
            p.grad = make_tensor(p.shape, torch.float32, device, generator=gen)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        assert_close(p, q, torch.float32)


@pytest.mark.skipif(fusedopt.cpu_capability() == "DEFAULT", reason="needs the fma of the AVX2/AVX512 kernels")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cpu_matches_torch_for_loop_to_the_last_bits(dtype):
    """On CPU the update follows torch's single-tensor path operation by operation with ATen's
    roundings (lerp's fma, addcmul's and addcdiv's operation order), so without weight decay (which
    feeds params back into the moments) exp_avg and exp_avg_sq stay bitwise equal to torch's over
    many steps. Params agree to a few ulps only: ATen's CPU sqrt is not correctly rounded (in this
    build torch.sqrt differs from the correctly rounded value for ~0.6% of float32 inputs), ours is,
    so denominators differ in the last bit now and then. Sizes are multiples of 16 so that no element
    falls into the scalar tail of ATen's kernels (whose lerp is not an fma)."""
    eps_rel = 4 * torch.finfo(dtype).eps
    for options in OPTION_COMBOS:
        for betas, eps in BETAS_EPS:
            gen = torch.Generator().manual_seed(5)
            params = [make_tensor(s, dtype, "cpu", generator=gen) for s in [(64,), (16, 8), (4096,)]]
            ours, theirs = [p.clone() for p in params], [p.clone() for p in params]
            a = fusedopt.optim.Adam(ours, lr=0.01, betas=betas, eps=eps, **options)
            b = _torch_adam(theirs, lr=0.01, betas=betas, eps=eps, **options)
            for _ in range(10):
                for p, q in zip(ours, theirs):
                    p.grad = make_tensor(p.shape, dtype, "cpu", generator=gen)
                    q.grad = p.grad.clone()
                a.step()
                b.step()
            for p, q in zip(ours, theirs):
                where = (_combo_id(options), betas, eps)
                # per element: within a few ulps of the param's magnitude (10 updates of size <= lr)
                assert ((p - q).abs() <= eps_rel * (q.abs() + 0.1)).all(), (where, (p - q).abs().max())
                if options["weight_decay"] == 0:
                    for key in ("exp_avg", "exp_avg_sq"):
                        assert torch.equal(a.state[p][key], b.state[q][key]), (where, key)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_and_many_tensors_in_one_group(device):
    """2,000+ tensors of four dtypes in one call: one parallel region (CPU) or few launches (CUDA),
    more tensors than one CUDA launch's table holds."""
    gen = torch.Generator().manual_seed(3)
    params = [make_tensor((random.Random(i).randint(1, 300),), DTYPES[i % 4], device, generator=gen)
              for i in range(2100)]
    ours = [p.clone() for p in params]
    kwargs = dict(lr=0.01, weight_decay=1e-2, amsgrad=True)
    opt = fusedopt.optim.AdamW(ours, **kwargs)
    refs = [NativeReference(torch.optim.AdamW, [p], **kwargs) if p.dtype == torch.float64
            else Float32Reference([p], p.dtype, decoupled_weight_decay=True, **kwargs) for p in params]
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
def test_params_without_grad_keep_their_own_step_counts(device):
    """A param whose grad is None is skipped (no state, no step); when it gets a grad later its bias
    correction starts from step 1 while the others continue: per-tensor steps in one call."""
    params = [make_tensor((37,), torch.float32, device) for _ in range(4)]
    ours, theirs = [p.clone() for p in params], [p.clone() for p in params]
    a = fusedopt.optim.Adam(ours, lr=0.05, amsgrad=True)
    b = _torch_adam(theirs, lr=0.05, amsgrad=True)
    for step in range(8):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            has_grad = not ((i == 1 and step < 3) or (i == 2 and step % 2))
            g = torch.randn_like(p) if has_grad else None
            p.grad, q.grad = g, (g.clone() if g is not None else None)
        a.step()
        b.step()
        assert (ours[1] in a.state) == (theirs[1] in b.state)
    for p, q in zip(ours, theirs):
        assert_close(p, q, torch.float32)
        assert a.state[p]["step"].item() == b.state[q]["step"].item()
    assert [a.state[p]["step"].item() for p in ours] == [8, 5, 4, 8]


@pytest.mark.parametrize("device", DEVICES)
def test_decoupled_decay_factor_is_rounded_as_torch_rounds_it(device):
    """AdamW multiplies params by 1 - lr * weight_decay, the product rounded before the subtraction
    (Python floats in torch). With zero grads the update itself is zero, so float64 params must equal
    torch's bit for bit; a compiler that contracts the product into an fma (GCC with -mfma, nvcc)
    was one ulp off for 14 of these 200 pairs."""
    rng = random.Random(0)
    for _ in range(200):
        lr, wd = rng.uniform(1e-4, 0.5), rng.uniform(1e-3, 0.9)
        p0 = torch.randn(8, dtype=torch.float64, device=device)
        ours, theirs = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
        ours.grad, theirs.grad = torch.zeros_like(p0), torch.zeros_like(p0)
        fusedopt.optim.AdamW([ours], lr=lr, weight_decay=wd).step()
        torch.optim.AdamW([theirs], lr=lr, weight_decay=wd, foreach=False).step()
        assert torch.equal(ours, theirs), (lr, wd)


@pytest.mark.parametrize("device", DEVICES)
def test_many_tiny_params_with_their_own_step_counts(device):
    """1,500 params of at most 3 elements (0-dim and empty among them) whose neighbours have other step
    counts. The CPU splits so many tensors across threads however few their elements, and each thread
    keeps the bias corrections of the last count it saw: they must be of that count."""
    shapes = [(), (0,), (1,), (2,), (3,)]
    gen = torch.Generator().manual_seed(11)
    params = [make_tensor(shapes[i % len(shapes)], torch.float32, device, generator=gen) for i in range(1500)]
    ours, theirs = [p.clone() for p in params], [p.clone() for p in params]
    a = fusedopt.optim.Adam(ours, lr=0.05, weight_decay=0.1)
    b = _torch_adam(theirs, lr=0.05, weight_decay=0.1)
    for step in range(6):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            g = torch.randn(p.shape, generator=gen).to(device) if step % (1 + i % 3) == 0 else None
            p.grad, q.grad = g, (g.clone() if g is not None else None)
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        assert_close(p, q, torch.float32)
        assert a.state[p]["step"].item() == b.state[q]["step"].item()
    assert sorted({a.state[p]["step"].item() for p in ours}) == [2, 3, 6]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheduler", ["step", "onecycle", "cosine"])
def test_param_groups_closure_and_schedulers(device, scheduler):
    results = []
    for cls in (torch.optim.AdamW, fusedopt.optim.AdamW):
        model = fresh_model(device)
        opt = cls([{"params": model[0].parameters(), "lr": 0.05, "amsgrad": True},
                   {"params": model[2].parameters(), "weight_decay": 0.1, "betas": (0.8, 0.99)}],
                  lr=0.01)
        if scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        elif scheduler == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[0.1, 0.02], total_steps=12)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
        train(model, opt, 10, device, closure=True, scheduler=sched)
        results.append((model, opt))
    (m_ref, o_ref), (m, o) = results
    for a, b in zip(m.parameters(), m_ref.parameters()):
        assert_close(a, b, torch.float32)
    assert [g["lr"] for g in o.param_groups] == [g["lr"] for g in o_ref.param_groups]
    assert [g["betas"] for g in o.param_groups] == [g["betas"] for g in o_ref.param_groups]


@pytest.mark.parametrize("device", DEVICES)
def test_add_param_group_mid_training(device):
    results = []
    for cls in (torch.optim.Adam, fusedopt.optim.Adam):
        model = fresh_model(device)
        opt = cls(model[0].parameters(), lr=0.01)
        for p in model[2].parameters():
            p.requires_grad_(False)
        train(model, opt, 3, device)
        for p in model[2].parameters():
            p.requires_grad_(True)
        opt.add_param_group({"params": model[2].parameters(), "amsgrad": True, "lr": 0.02})
        train(model, opt, 3, device, seed=1)
        results.append(model)
    for a, b in zip(results[1].parameters(), results[0].parameters()):
        assert_close(a, b, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_lr_changed_in_place(device):
    lr = torch.tensor(0.01, device=device)
    results = []
    for cls, extra in ((torch.optim.Adam, dict(foreach=False)), (fusedopt.optim.Adam, dict(capturable=True))):
        model = fresh_model(device)
        opt = cls(model.parameters(), lr=lr.clone(), weight_decay=0.01, decoupled_weight_decay=True, **extra)
        train(model, opt, 3, device)
        opt.param_groups[0]["lr"].fill_(0.002)  # changed in place, as a captured graph would see it
        train(model, opt, 3, device, seed=2)
        results.append(model)
    for a, b in zip(results[1].parameters(), results[0].parameters()):
        assert_close(a, b, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("torch_kwargs", [dict(), dict(fused=True), dict(capturable=True)],
                         ids=["torch-default", "torch-fused", "torch-capturable"])
def test_checkpoints_move_both_ways(device, torch_kwargs):
    """state_dicts have torch's layout: torch -> fusedopt -> torch mid-training equals torch alone.
    torch's default path keeps `step` on the CPU; loading moves it to the param's device."""
    if device == "cpu" and torch_kwargs.get("capturable"):
        pytest.skip("torch's capturable Adam needs an accelerator")
    kwargs = dict(lr=0.01, weight_decay=1e-2, amsgrad=True)
    model = fresh_model(device)
    opt = torch.optim.AdamW(model.parameters(), **kwargs, **torch_kwargs)
    train(model, opt, 3, device)
    for src_cls, dst_cls, seed in ((torch.optim.AdamW, fusedopt.optim.AdamW, 1),
                                   (fusedopt.optim.AdamW, torch.optim.AdamW, 2)):
        sd = copy.deepcopy(opt.state_dict())
        opt = dst_cls(model.parameters(), **kwargs, **(torch_kwargs if dst_cls is torch.optim.AdamW else {}))
        opt.load_state_dict(sd)
        assert set(opt.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
        if dst_cls is fusedopt.optim.AdamW:
            for st in opt.state.values():
                assert st["step"].device.type == torch.device(device).type and st["step"].dtype == torch.float32
        train(model, opt, 3, device, seed=seed)
    model_ref = fresh_model(device)
    opt_ref = torch.optim.AdamW(model_ref.parameters(), **kwargs, **torch_kwargs)
    for seed in (0, 1, 2):
        train(model_ref, opt_ref, 3, device, seed=seed)
    for a, b in zip(model.parameters(), model_ref.parameters()):
        assert_close(a, b, torch.float32)
    for a, b in zip(opt.state.values(), opt_ref.state.values()):
        assert a["step"].item() == b["step"].item() == 9


def test_state_dict_layout_equals_torch():
    model = fresh_model("cpu")
    sds = []
    for cls in (torch.optim.Adam, fusedopt.optim.Adam):
        m = copy.deepcopy(model)
        opt = cls(m.parameters(), lr=0.1, amsgrad=True)
        train(m, opt, 1, "cpu")
        sds.append(opt.state_dict())
    assert sds[0]["param_groups"] == sds[1]["param_groups"]
    assert sds[0]["state"].keys() == sds[1]["state"].keys()
    for k in sds[0]["state"]:
        assert sds[0]["state"][k].keys() == sds[1]["state"][k].keys()
        step = sds[1]["state"][k]["step"]
        assert torch.is_tensor(step) and step.dim() == 0 and step.dtype == torch.float32


def test_pickle_keeps_master_weights_flag():
    import pickle
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.bfloat16))
    opt = fusedopt.optim.AdamW([p], master_weights=True)
    assert pickle.loads(pickle.dumps(opt)).master_weights


# ---------------------------------------------------------------------------------------------
# GradScaler


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("amsgrad,clip", [(False, False), (True, False), (False, True)],
                         ids=["plain", "amsgrad", "unscale_-and-clip"])
def test_grad_scaler_matches_torch_fused_and_foreach(device, amsgrad, clip):
    """With torch.amp.GradScaler the step unscales grads inside the kernel; a step with an inf grad
    changes nothing (params, states, step counts; grads stay scaled) and the scale backs off, as with
    torch's fused and foreach AdamW. With scaler.unscale_() and clipping first, step() gets only
    found_inf (grad_scale None)."""
    check_grad_scaler_matches_torch(
        device, lambda ps: fusedopt.optim.AdamW(ps, lr=0.01, amsgrad=amsgrad),
        [lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=amsgrad, fused=True),
         lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=amsgrad, foreach=True)],
        steps=7, inf_steps=(0, 4), clip=0.5 if clip else None, expected_steps=5,  # 7 steps, 2 skipped
        close=assert_close)


@pytest.mark.parametrize("device", DEVICES)
def test_op_grad_scale_and_found_inf(device):
    p = make_tensor((100,), torch.float32, device)
    g = make_tensor((100,), torch.float32, device) * 8
    m, v, step = torch.zeros_like(p), torch.zeros_like(p), torch.zeros((), device=device)
    p0, g0 = p.clone(), g.clone()
    kwargs = _op_kwargs(amsgrad=False)
    check_op_unscales_and_skips(
        device, lambda **amp: torch.ops.fusedopt.adam_([p], [g], [m], [v], [], [step], **kwargs, **amp),
        [p, m, v], [g], steps=[step], close=assert_close)
    # first step: m = 0.1 g, v = 0.001 g^2, update = -lr * g / (|g| + eps) ~ -lr * sign(g)
    assert_close(p, p0 - 0.1 * torch.sign(g0), torch.float32)


# ---------------------------------------------------------------------------------------------
# Master weights


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_master_weights_track_float32_training(device, dtype):
    """With master_weights=True, float16/bfloat16 params are the rounded float32 masters of a float32
    AdamW run on the same (rounded) grads; without, updates smaller than half an ulp of the param are
    lost or rounded every step and the params drift much further from that run."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(1000,), (33, 7), (4, 3, 5, 5), ()]
    base = [make_tensor(s, torch.float32, device, generator=gen) for s in shapes]
    start = [b.to(dtype) for b in base]
    ref = [s.float() for s in start]
    master = [s.clone() for s in start]
    plain = [s.clone() for s in start]
    kwargs = dict(lr=1e-3, weight_decay=1e-2, amsgrad=True)
    o_ref = torch.optim.AdamW(ref, foreach=False, **kwargs)
    o_master = fusedopt.optim.AdamW(master, master_weights=True, **kwargs)
    o_plain = fusedopt.optim.AdamW(plain, **kwargs)
    for _ in range(100):
        grads = [make_tensor(s, dtype, device, generator=gen) for s in shapes]
        for r, mp, pp, g in zip(ref, master, plain, grads):
            r.grad, mp.grad, pp.grad = g.float(), g.clone(), g.clone()
        for o in (o_ref, o_master, o_plain):
            o.step()
    master_err = plain_err = 0.0
    for r, mp, pp in zip(ref, master, plain):
        st = o_master.state[mp]
        assert st["master_param"].dtype == torch.float32 and st["exp_avg"].dtype == torch.float32
        assert mp.dtype == dtype and torch.equal(mp, st["master_param"].to(dtype))
        torch.testing.assert_close(st["master_param"], r, rtol=1e-5, atol=1e-6)
        master_err = max(master_err, (mp.float() - r).abs().max().item())
        plain_err = max(plain_err, (pp.float() - r).abs().max().item())
    assert master_err <= torch.finfo(dtype).eps * 4  # half an ulp of |params| < 8
    assert master_err * 4 < plain_err, (master_err, plain_err)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_master_weights_op_unscales_and_skips(device, dtype):
    """The master-weight path under GradScaler's contract: scaled grads give the same update as
    unscaled ones and are written back unscaled; found_inf != 0 changes nothing. Odd sizes and an
    unaligned storage offset exercise the partial-register tails."""
    gen = torch.Generator().manual_seed(2)
    shapes, layouts = [(37,), (3, 50), (), (1,)], ["offset", "contiguous", "contiguous", "offset"]
    params = [make_tensor(s, dtype, device, lay, gen) for s, lay in zip(shapes, layouts)]
    grads = [make_tensor(s, dtype, device, generator=gen) for s in shapes]

    def lists():
        ps = [p.clone() for p in params]
        return dict(ps=ps, masters=[p.float() for p in ps], m=[torch.full(p.shape, 0.1, device=device) for p in ps],
                    v=[torch.full(p.shape, 0.2, device=device) for p in ps],
                    mx=[torch.full(p.shape, 0.3, device=device) for p in ps],
                    steps=[torch.full((), 4.0, device=device) for _ in ps])

    def run(l, gs, **extra):
        torch.ops.fusedopt.adam_(l["ps"], gs, l["m"], l["v"], l["mx"], l["steps"],
                                 **_op_kwargs(lr=0.01, weight_decay=0.1, master_params=l["masters"], **extra))

    plain, scaled, skipped = lists(), lists(), lists()
    run(plain, [g.clone() for g in grads])
    scaled_grads = [g * 4 for g in grads]
    run(scaled, scaled_grads, grad_scale=torch.tensor(4.0, device=device))
    skipped_grads = [g * 4 for g in grads]
    run(skipped, skipped_grads, grad_scale=torch.tensor(4.0, device=device),
        found_inf=torch.tensor(1.0, device=device))
    for key in ("ps", "masters", "m", "v", "mx", "steps"):
        for a, b in zip(scaled[key], plain[key]):
            assert torch.equal(a, b), key
    for g, g0 in zip(scaled_grads, grads):
        assert torch.equal(g, g0)  # times 4 then divided by 4: exact
    fresh = lists()
    for key in fresh:
        for a, b in zip(skipped[key], fresh[key]):
            assert torch.equal(a, b), key
    for g, g0 in zip(skipped_grads, grads):
        assert torch.equal(g, g0 * 4)
    assert all(s.item() == 5 for s in plain["steps"])
    for p, m, p0 in zip(plain["ps"], plain["masters"], params):
        assert torch.equal(p, m.to(dtype))  # the param is its master, rounded
        assert (m != p0.float()).all()  # and the master moved


def test_master_weights_mixed_group_and_checkpoint_round_trip():
    """float32 params in a master-weights group are updated as usual (no master copy); the float32
    masters and states survive a state_dict round trip; a torch optimizer can load the checkpoint."""
    gen = torch.Generator().manual_seed(1)
    half = torch.nn.Parameter(make_tensor((50,), torch.bfloat16, "cpu", generator=gen))
    full = torch.nn.Parameter(make_tensor((50,), torch.float32, "cpu", generator=gen))
    full_ref = full.detach().clone()
    opt = fusedopt.optim.AdamW([half, full], lr=1e-3, master_weights=True)
    o_ref = torch.optim.AdamW([full_ref], lr=1e-3, foreach=False)
    for _ in range(5):
        g = torch.randn(50, generator=gen)
        half.grad, full.grad, full_ref.grad = g.bfloat16(), g.clone(), g.clone()
        opt.step()
        o_ref.step()
    assert "master_param" not in opt.state[full]
    assert_close(full, full_ref, torch.float32)
    sd = copy.deepcopy(opt.state_dict())
    assert sd["state"][0]["master_param"].dtype == torch.float32
    opt2 = fusedopt.optim.AdamW([half, full], lr=1e-3, master_weights=True)
    opt2.load_state_dict(sd)
    for key in ("master_param", "exp_avg", "exp_avg_sq"):
        assert torch.equal(opt2.state[half][key], sd["state"][0][key])
    torch_opt = torch.optim.AdamW([half, full], lr=1e-3)
    torch_opt.load_state_dict(sd)
    torch_opt.step()


def test_load_state_dict_post_hooks_see_the_fixed_up_state():
    """A load_state_dict post-hook sees the state as step() will: after fusedopt's fix-ups (here the
    float32 masters and states that Optimizer.load_state_dict had cast to bfloat16), as torch's hooks
    see torch's casts. Hooks run in order, once, and their handles still remove them."""
    half = torch.nn.Parameter(torch.randn(7).bfloat16())
    half.grad = torch.randn(7).bfloat16()
    opt = fusedopt.optim.AdamW([half], lr=1e-3, master_weights=True)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    seen = []
    opt2 = fusedopt.optim.AdamW([half], lr=1e-3, master_weights=True)
    opt2.register_load_state_dict_post_hook(lambda o: seen.append(("first", o.state[half]["exp_avg"].dtype)))
    handle = opt2.register_load_state_dict_post_hook(
        lambda o: seen.append(("second", o.state[half]["master_param"].dtype)))
    opt2.load_state_dict(sd)
    assert seen == [("first", torch.float32), ("second", torch.float32)]
    handle.remove()
    opt2.load_state_dict(sd)
    assert seen[2:] == [("first", torch.float32)]


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, raised before anything is modified


def test_constructor_errors_match_torch():
    params = [torch.zeros(3, requires_grad=True)]
    cases = [dict(lr=-1.0), dict(eps=-1e-8), dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1)),
             dict(weight_decay=-1.0), dict(lr=torch.tensor([0.1, 0.2])),
             dict(betas=(torch.tensor(0.9), 0.99)), dict(lr=torch.tensor(0.1), foreach=True)]
    for cls in ("Adam", "AdamW"):
        for kwargs in cases:
            with pytest.raises(ValueError) as ours:
                getattr(fusedopt.optim, cls)(params, **kwargs)
            with pytest.raises(ValueError) as theirs:
                getattr(torch.optim, cls)(params, **kwargs)
            assert str(ours.value) == str(theirs.value), kwargs
        with pytest.raises(ValueError, match="empty parameter list"):
            getattr(fusedopt.optim, cls)([], lr=0.1)
        with pytest.raises(RuntimeError, match="differentiable"):
            getattr(fusedopt.optim, cls)(params, differentiable=True)
        with pytest.raises(RuntimeError, match="cannot be `True` together"):
            getattr(fusedopt.optim, cls)(params, fused=True, foreach=True)
    o = fusedopt.optim.Adam(params, fused=True, capturable=True)
    assert o.defaults["fused"] is True and o.defaults["capturable"] is True


def test_same_defaults_as_torch():
    params = [torch.zeros(3, requires_grad=True)]
    for cls in ("Adam", "AdamW"):
        assert getattr(fusedopt.optim, cls)(params).defaults == getattr(torch.optim, cls)(params).defaults


@pytest.mark.parametrize("bad", ["sparse", "complex"])
def test_bad_grad_in_a_later_group_modifies_nothing(bad):
    check_bad_input_in_later_group_modifies_nothing(fusedopt.optim.Adam, bad, kwargs=dict(lr=0.1, amsgrad=True))


def test_state_of_wrong_shape_is_rejected_before_any_update():
    check_bad_input_in_later_group_modifies_nothing(fusedopt.optim.Adam, "shape", kwargs=dict(lr=0.1),
                                                    state_keys=("exp_avg_sq", "exp_avg"))
    check_bad_input_in_later_group_modifies_nothing(fusedopt.optim.Adam, "shape", kwargs=dict(lr=0.1, amsgrad=True),
                                                    state_keys=("max_exp_avg_sq",))


def test_step_of_wrong_size_is_rejected_before_any_update():
    check_bad_input_in_later_group_modifies_nothing(fusedopt.optim.Adam, "step", kwargs=dict(lr=0.1))


def test_step_counts_needing_repair_are_found_with_or_without_a_second_walk():
    # collect_group notes which steps must be moved/retyped as it collects them; after a step state is
    # replaced the same answer comes from walking them again.
    from fusedopt.optim import _common
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(4)]
    for p in params:
        p.grad = torch.randn(3)
    opt = fusedopt.optim.Adam(params, lr=0.1)
    opt.step()
    opt.state[params[1]]["step"] = torch.tensor(1.0, dtype=torch.float64)  # torch's non-fused kind
    opt.state[params[3]]["step"] = torch.tensor([1.0])                      # one element, not 0-dim
    keys, scalar_keys = opt._collect_keys(opt.param_groups[0])
    c = _common.collect(opt, opt._NAME, 0, keys, scalar_keys=scalar_keys)
    assert fusedopt._C.scalar_state_fixes(c, "step") == ([1, 3], -1, 0)
    c.set_state("step", 1, torch.tensor(1.0))
    assert fusedopt._C.scalar_state_fixes(c, "step") == ([3], -1, 0)
    c.set_state("step", 2, torch.zeros(2))
    assert fusedopt._C.scalar_state_fixes(c, "step") == ([], 2, 2)
    opt.state[params[0]]["step"] = torch.zeros(2)
    c = _common.collect(opt, opt._NAME, 0, keys, scalar_keys=scalar_keys)
    assert fusedopt._C.scalar_state_fixes(c, "step") == ([], 0, 2)


def test_state_of_another_layout_or_dtype_is_repaired():
    """State from a checkpoint in float64 / another memory order is brought to the param's layout."""
    p, q = torch.randn(6, 5), None
    q = p.clone()
    a = fusedopt.optim.Adam([p], lr=0.1)
    b = _torch_adam([q], lr=0.1)
    for i in range(4):
        g = torch.randn(5, 6).t()  # a grad in another memory order
        p.grad, q.grad = g, g.clone()
        a.step()
        b.step()
        if i == 1:
            a.state[p]["exp_avg"] = a.state[p]["exp_avg"].double().t().contiguous().t()
    assert_close(p, q, torch.float32)
    assert a.state[p]["exp_avg"].dtype == torch.float32


def _op_kwargs(**over):
    kw = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=True, maximize=False,
              decoupled_weight_decay=False, master_params=[])
    kw.update(over)
    return kw


def _lists(n=1, shape=(3,), dtype=torch.float32):
    return [[torch.ones(shape, dtype=dtype) for _ in range(n)] for _ in range(5)] + [[torch.zeros(()) for _ in range(n)]]


OP_ERRORS = [
    ("length", lambda l: l[1].append(torch.ones(3)), {}, "grads has 3 tensors but params has 2"),
    ("amsgrad_without_max", lambda l: l[4].clear(), {}, "max_exp_avg_sqs has 0 tensors"),
    ("max_without_amsgrad", lambda l: None, dict(amsgrad=False), "amsgrad is not set"),
    ("steps_length", lambda l: l[5].pop(), {}, "state_steps has 1 tensors"),
    ("step_dtype", lambda l: l[5].__setitem__(1, torch.zeros((), dtype=torch.float64)), {},
     "state_steps\\[1\\] has dtype Double"),
    ("step_numel", lambda l: l[5].__setitem__(1, torch.zeros(2)), {}, "state_steps\\[1\\] has 2 elements"),
    ("dtype", lambda l: l[2].__setitem__(1, torch.ones(3, dtype=torch.float64)), {}, "exp_avgs\\[1\\] has dtype Double"),
    ("shape", lambda l: l[3].__setitem__(1, torch.ones(4)), {}, "has shape"),
    ("layout", lambda l: [l[k].__setitem__(1, torch.ones(3, 4)) for k in range(4)] + [l[4].__setitem__(1, torch.ones(4, 3).t())],
     {}, "same memory layout"),
    ("gaps", lambda l: l[0].__setitem__(1, torch.ones(3, 2)[:, 0]), {}, "not dense"),
    ("sparse", lambda l: l[1].__setitem__(1, torch.ones(3).to_sparse()), {}, "sparse"),
    ("complex", lambda l: [l[k].__setitem__(1, torch.ones(3, dtype=torch.complex64)) for k in range(5)], {}, "complex"),
    ("lr_tensor_dtype", lambda l: None, dict(lr_tensor=torch.tensor(0.1, dtype=torch.float64)), "lr_tensor has dtype Double"),
    ("found_inf_numel", lambda l: None, dict(found_inf=torch.zeros(2)), "found_inf has 2 elements"),
    ("grad_scale_dtype", lambda l: None, dict(grad_scale=torch.tensor(2.0, dtype=torch.float16)),
     "grad_scale has dtype Half; expected float32 or float64"),
    ("grad_scale_numel", lambda l: None, dict(grad_scale=torch.ones(3)),
     "grad_scale has 3 elements; expected 1 element \\(the divisor\\) or 2 contiguous ones"),
    ("grad_scale_strided", lambda l: None, dict(grad_scale=torch.ones(4)[::2]), "grad_scale has 2 elements \\(not contiguous\\)"),
    ("master_dtype", lambda l: None, dict(master_params=[torch.ones(5), torch.ones(3)]), "expected float16 or bfloat16 params"),
]


@pytest.mark.parametrize("name,edit,extra,message", OP_ERRORS, ids=[e[0] for e in OP_ERRORS])
def test_op_rejects_bad_input_before_writing(name, edit, extra, message):
    # A good first entry: it must not have been written when a later entry is rejected.
    lists = [[torch.full((5,), 2.0)] + l for l in _lists()[:5]] + [[torch.zeros(()), torch.zeros(())]]
    edit(lists)
    assert_op_rejects_before_writing(torch.ops.fusedopt.adam_, lists, _op_kwargs(**extra), message)


# ---------------------------------------------------------------------------------------------
# The op as a torch custom op


def _opcheck_samples(device):
    gen = torch.Generator().manual_seed(0)
    shapes = [(3,), (2, 5), (0,), ()]
    mk = lambda dtype=torch.float32: [make_tensor(s, dtype, device, generator=gen) for s in shapes]  # noqa: E731
    sq = lambda: [t.abs() for t in mk()]  # noqa: E731
    steps = lambda: [torch.full((), 3.0, device=device) for _ in shapes]  # noqa: E731
    yield (mk(), mk(), mk(), sq(), sq(), steps()), _op_kwargs()
    yield (mk(), mk(), mk(), sq(), [], steps()), _op_kwargs(amsgrad=False, maximize=True, weight_decay=0.1,
                                                           decoupled_weight_decay=True)
    yield (mk(), mk(), mk(), sq(), [], steps()), _op_kwargs(
        amsgrad=False, lr_tensor=torch.tensor(0.3, device=device), grad_scale=torch.tensor(4.0, device=device),
        found_inf=torch.tensor(0.0, device=device))
    yield (mk(), mk(), mk(), sq(), [], steps()), _op_kwargs(  # folded clipping's [scale, coefficient]
        amsgrad=False, grad_scale=torch.tensor([4.0, 0.5], device=device), write_grads=False)
    yield (mk(torch.bfloat16), mk(torch.bfloat16), mk(), sq(), sq(), steps()), _op_kwargs(master_params=mk())


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for args, kwargs in _opcheck_samples(device):
        torch.library.opcheck(torch.ops.fusedopt.adam_.default, args, kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_compiled_step_matches_eager(device):
    def step(*lists):
        torch.ops.fusedopt.adam_(*lists, **_op_kwargs(weight_decay=0.01))

    params = [make_tensor((37,), torch.float32, device) for _ in range(3)]
    lists = [params] + [[torch.randn_like(p).abs() for p in params] for _ in range(4)]
    lists.append([torch.full((), 2.0, device=device) for _ in params])
    eager = [[t.clone() for t in ts] for ts in lists]
    step(*eager)
    torch.compile(step, backend="aot_eager", fullgraph=True)(*lists)
    for a, b in zip(lists, eager):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


# ---------------------------------------------------------------------------------------------
# CUDA specifics


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_without_host_sync_and_graph_capture():
    """The CUDA step (step counts, found_inf, tensor lr on device) can be captured and replayed."""
    params = [torch.randn(n, device="cuda") for n in (1000, 3, 70000)]
    grads = [torch.randn_like(p) for p in params]
    lists = lambda ps: [ps, grads, [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps], [],  # noqa: E731
                        [torch.zeros((), device="cuda") for _ in ps]]
    ours, ref = lists(params), lists([p.clone() for p in params])
    lr = torch.tensor(0.01, device="cuda")
    found_inf = torch.zeros((), device="cuda")
    kw = _op_kwargs(amsgrad=False, weight_decay=0.1, decoupled_weight_decay=True)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch.ops.fusedopt.adam_(*ours, **kw, lr_tensor=lr, found_inf=found_inf)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.ops.fusedopt.adam_(*ours, **kw, lr_tensor=lr, found_inf=found_inf)
    for step_lr, inf in ((0.01, 0.0), (0.01, 1.0), (0.005, 0.0)):
        lr.fill_(step_lr)
        found_inf.fill_(inf)
        graph.replay()
    for step_lr in (0.01, 0.01, 0.005):
        torch.ops.fusedopt.adam_(*ref, **dict(kw, lr=step_lr))
    torch.cuda.synchronize()
    assert [s.item() for s in ours[5]] == [3.0] * 3
    for a, b in zip(ours[0], ref[0]):
        torch.testing.assert_close(a, b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_grad_scaler_tensors_with_cpu_params():
    """A GradScaler on the GPU, params on the CPU (offloaded): its scale and found_inf are copied to the
    CPU, and must have arrived before the CPU kernel reads them (a non-blocking copy to the CPU returns
    before it has)."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (1000, 7, 4096)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt, ref_opt = fusedopt.optim.AdamW(params, lr=0.1), fusedopt.optim.AdamW(ref, lr=0.1)
    for step in range(4):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads):
            p.grad = g * 1024  # a power of two: unscaling is exact
        for p, g in zip(ref, grads):
            p.grad = g.clone()
        # Work queued on the GPU first, so that an unsynchronised copy would still be pending.
        busy = torch.randn(4096, 4096, device="cuda")
        pending = (busy @ busy).sum() * 0
        opt.grad_scale = pending + 1024.0  # as GradScaler sets them for the duration of step()
        opt.found_inf = pending + (1.0 if step == 2 else 0.0)
        opt.step()
        del opt.grad_scale, opt.found_inf
        if step != 2:  # found_inf: the step is skipped, step counts included
            ref_opt.step()
        for a, b in zip(params, ref):
            assert torch.equal(a, b), step
