"""Smoke test of an installed fusedopt wheel, run from outside the source tree in a fresh environment
(torch is its only dependency; a few seconds on CPU): it imports, reports how it was built, and runs one
short check per op family against torch:
  - SGD, Adam, AdamW, RMSprop, Adagrad: a few steps equal to torch's single-tensor optimizer (SGD
    exactly; the others to rounding, torch's CPU sqrt not being correctly rounded), states included;
  - fusedopt.nn.utils.clip_grad_norm_: total norm and clipped grads as torch.nn.utils.clip_grad_norm_;
  - fusedopt.nn.BatchNorm2d: training forward and backward, running stats and an eval forward as
    torch.nn.BatchNorm2d;
  - fusedopt.nn.Dropout: output and input grad are input/grad times the mask over 1 - p, kept fraction
    near 1 - p, identity in eval mode.
With --expect-torch-mismatch it checks instead that a wheel built for another torch fails readably."""

import os
import sys

import torch

if "--expect-torch-mismatch" in sys.argv:
    # A wheel built for another torch minor version must fail to import with the readable message,
    # not with an undefined-symbol error from the dynamic loader.
    try:
        import fusedopt  # noqa: F401
    except ImportError as e:
        assert "was built against torch" in str(e), f"unexpected import error: {e}"
        print(f"readable error as expected: {e}")
        sys.exit(0)
    sys.exit(f"fusedopt imported against torch {torch.__version__}, expected a version-mismatch error")

import fusedopt  # noqa: E402

here = os.path.dirname(os.path.abspath(fusedopt.__file__))
assert not os.path.exists(os.path.join(os.path.dirname(here), "setup.py")), \
    f"fusedopt imported from a source tree ({here}), not from an installed wheel"
info = fusedopt.build_info()
print(f"fusedopt {fusedopt.__version__} from {here}: {info}")
expected_cuda = os.environ.get("EXPECT_CUDA_KERNELS")
if expected_cuda is not None and info["with_cuda"] != (expected_cuda == "1"):
    sys.exit(f"with_cuda is {info['with_cuda']}, expected {expected_cuda == '1'}")

SIZES = (3, 1000, 70001)  # shorter than one SIMD register, a few registers, several threads' slices


def check_close(actual, expected, what, rtol=0.0, atol=0.0):
    """|actual - expected| <= atol + rtol * |expected| everywhere (NaN fails), same shape and dtype.
    Cheaper than torch.testing.assert_close, whose cost dominates this script on a busy machine."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, \
        f"{what}: {actual.dtype}{list(actual.shape)} vs {expected.dtype}{list(expected.shape)}"
    if rtol == 0 and atol == 0:
        assert torch.equal(actual, expected), f"{what}: not bitwise equal"
        return
    a, e = actual.detach().double(), expected.detach().double()
    err = (a - e).abs()
    bad = ~(err <= atol + rtol * e.abs())
    if bad.any():
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.numel()} elements differ by more than "
                             f"rtol={rtol}, atol={atol} (max error {err.max().item():.3g})")


def check_optimizer(name, ours_cls, theirs_cls, steps, exact=False, **kwargs):
    torch.manual_seed(0)
    params = [torch.randn(n) for n in SIZES]
    ref = [p.clone() for p in params]
    ours = ours_cls(params, **kwargs)
    theirs = theirs_cls(ref, foreach=False, **kwargs)  # torch's single-tensor path, the one we follow
    for _ in range(steps):
        for p, q in zip(params, ref):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        ours.step()
        theirs.step()
    # float32: the test suite's stated parity tolerance (tests/optim_parity.py). torch's CPU sqrt is not
    # always correctly rounded, and centered RMSprop's sqrt(v - mean^2) amplifies an ulp there (5.7e-6 in
    # a momentum buffer on the 2-core Xeon of 2026-12-04, above the 1e-5/1e-6 this used).
    tol = dict() if exact else dict(rtol=1e-4, atol=1e-5)
    for i, (p, q) in enumerate(zip(params, ref)):
        check_close(p, q, f"{name} param {i}", **tol)
        a, b = ours.state[p], theirs.state[q]
        assert a.keys() == b.keys(), (name, a.keys(), b.keys())
        for key in b:
            if torch.is_tensor(b[key]):
                check_close(a[key].cpu().float(), b[key].cpu().float(), f"{name} param {i} state {key}", **tol)
    print(f"ok: {steps} {name} steps {'equal' if exact else 'close'} to torch.optim.{theirs_cls.__name__}")


optim = fusedopt.optim
check_optimizer("SGD", optim.SGD, torch.optim.SGD, 5, exact=True,
                lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
check_optimizer("Adam", optim.Adam, torch.optim.Adam, 3, lr=0.01, amsgrad=True, weight_decay=0.01)
check_optimizer("AdamW", optim.AdamW, torch.optim.AdamW, 3, lr=0.01, betas=(0.8, 0.99))
check_optimizer("RMSprop", optim.RMSprop, torch.optim.RMSprop, 3,
                lr=0.01, momentum=0.9, centered=True, weight_decay=0.01)
check_optimizer("Adagrad", optim.Adagrad, torch.optim.Adagrad, 3,
                lr=0.05, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)

# Gradient clipping: the total norm and the clipped grads (one clipping, one no-op).
for norm_type, max_norm in ((2.0, 1.0), (float("inf"), 1e6)):
    torch.manual_seed(1)
    grads = [torch.randn(n) for n in SIZES]
    ours = [torch.zeros(n, requires_grad=True) for n in SIZES]
    theirs = [torch.zeros(n, requires_grad=True) for n in SIZES]
    for a, b, g in zip(ours, theirs, grads):
        a.grad, b.grad = g.clone(), g.clone()
    n_ours = fusedopt.nn.utils.clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type, foreach=False)
    check_close(n_ours, n_theirs, f"total {norm_type}-norm", rtol=1e-5)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        check_close(a.grad, b.grad, f"clipped grad {i} ({norm_type}-norm)", rtol=1e-5, atol=1e-7)
    clipped = n_theirs.item() > max_norm
    assert clipped == (norm_type == 2.0), "the check should clip once and not clip once"
print("ok: clip_grad_norm_ (2-norm, clipping; inf-norm, no-op) as torch.nn.utils.clip_grad_norm_")

# BatchNorm2d: one training step forward and backward, then an eval forward.
torch.manual_seed(2)
ref_bn = torch.nn.BatchNorm2d(6)
our_bn = fusedopt.nn.BatchNorm2d(6)
assert isinstance(our_bn, torch.nn.BatchNorm2d)
with torch.no_grad():
    ref_bn.weight.uniform_(0.5, 1.5)
    ref_bn.bias.uniform_(-0.5, 0.5)
our_bn.load_state_dict(ref_bn.state_dict())
x = (torch.randn(8, 6, 9, 7) * 3 + 1).requires_grad_()
x_ours = x.detach().clone().requires_grad_()
y_ref, y_ours = ref_bn(x), our_bn(x_ours)
dy = torch.randn_like(y_ref)
y_ref.backward(dy)
y_ours.backward(dy)
bn_tol = dict(rtol=1e-4, atol=1e-5)
check_close(y_ours, y_ref, "BatchNorm2d output", **bn_tol)
check_close(x_ours.grad, x.grad, "BatchNorm2d grad_input", **bn_tol)
check_close(our_bn.weight.grad, ref_bn.weight.grad, "BatchNorm2d grad_weight", **bn_tol)
check_close(our_bn.bias.grad, ref_bn.bias.grad, "BatchNorm2d grad_bias", **bn_tol)
check_close(our_bn.running_mean, ref_bn.running_mean, "BatchNorm2d running_mean", **bn_tol)
check_close(our_bn.running_var, ref_bn.running_var, "BatchNorm2d running_var", **bn_tol)
assert int(our_bn.num_batches_tracked) == int(ref_bn.num_batches_tracked) == 1
ref_bn.eval()
our_bn.eval()
with torch.no_grad():
    check_close(our_bn(x), ref_bn(x), "BatchNorm2d eval output", **bn_tol)
print("ok: BatchNorm2d training forward/backward, running stats and eval forward as torch.nn.BatchNorm2d")

# Dropout: out = x * mask / (1 - p) and grad_in = grad_out * mask / (1 - p) with the same mask.
p, n = 0.3, 100_000
drop = fusedopt.nn.Dropout(p)
assert isinstance(drop, torch.nn.Dropout)
x = (torch.rand(n, 10) + 0.5).requires_grad_()  # no zeros: a zero output means dropped
y = drop(x)
assert y.shape == x.shape and y.dtype == x.dtype
keep = y.detach() != 0
check_close(y, x * keep / (1 - p), "Dropout output", rtol=1e-6)
kept = keep.float().mean().item()
assert abs(kept - (1 - p)) < 0.01, f"kept fraction {kept}, expected about {1 - p}"
g = torch.randn_like(y)
y.backward(g)
check_close(x.grad, g * keep / (1 - p), "Dropout grad_input", rtol=1e-6)
drop.eval()
assert torch.equal(drop(x.detach()), x.detach())
print(f"ok: Dropout(p={p}) forward/backward scale 1/(1-p) on a shared mask, kept {kept:.4f}, eval is identity")
print("smoke test passed")
