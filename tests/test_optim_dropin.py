"""Drop-in details every fusedopt optimizer shares with its torch.optim counterpart: a tensor lr read at
its own precision, torch's constructor errors in torch's order, and copies (copy.deepcopy, pickling)
that keep fusedopt's own options."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import fusedopt
from conftest import DEVICES
from optim_parity import assert_unchanged, snapshot

CLASSES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]
KWARGS = {"SGD": dict(momentum=0.9), "Adam": dict(amsgrad=True), "AdamW": dict(weight_decay=0.1),
          "RMSprop": dict(centered=True, momentum=0.5), "Adagrad": dict(lr_decay=0.01)}


def _pair(name, params_ours, params_theirs, **kwargs):
    kwargs = {**KWARGS[name], **kwargs}
    theirs = getattr(torch.optim, name)(params_theirs, foreach=False, **kwargs)
    return getattr(fusedopt.optim, name)(params_ours, **kwargs), theirs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CLASSES)
def test_float64_tensor_lr_keeps_its_precision(name, device):
    """torch's default path reads a float64 lr tensor as a float64; fusedopt read it as float32 (off by
    ~1.5e-9 relative per step for lr=0.1). A CPU lr tensor is read on the host, for CPU and GPU params."""
    g = torch.Generator().manual_seed(0)
    p0 = torch.randn(10, dtype=torch.float64, generator=g).to(device)
    ours, theirs = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    a, b = _pair(name, [ours], [theirs], lr=torch.tensor(0.1, dtype=torch.float64))
    for _ in range(5):
        grad = torch.randn(10, dtype=torch.float64, generator=g).to(device)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        a.step()
        b.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_fused_with_foreach_is_torchs_error_after_its_param_checks(name):
    cls, ref = getattr(fusedopt.optim, name), getattr(torch.optim, name)
    for c in (cls, ref):
        with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
            c([torch.nn.Parameter(torch.zeros(2))], fused=True, foreach=True)
        with pytest.raises(ValueError, match="empty parameter list"):
            c([], fused=True, foreach=True)


def _copies(opt):
    buffer = io.BytesIO()
    torch.save(opt, buffer)
    buffer.seek(0)
    return copy.deepcopy(opt), torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", CLASSES)
def test_copies_keep_fusedopt_options_and_step_alike(name):
    """copy.deepcopy and pickling go through torch's __getstate__, which keeps defaults, state and
    param groups only: a copy used to lose max_grad_norm and silently stop clipping."""
    extra = dict(max_grad_norm=1.0, grad_norm_type=3.0)
    if name in ("Adam", "AdamW"):
        extra["master_weights"] = True
    param = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16 if "master_weights" in extra else torch.float32))
    opt = getattr(fusedopt.optim, name)([param], lr=0.1, **KWARGS[name], **extra)
    param.grad = torch.full_like(param, 10.0)
    opt.step()
    copies = _copies(opt)
    opt.step()  # the original's second step, which each copy must repeat
    for copied in copies:
        for key, value in extra.items():
            assert getattr(copied, key) == value, key
        assert copied._step_supports_amp_scaling
        (twin,) = copied.param_groups[0]["params"]
        twin.grad = torch.full_like(twin, 10.0)
        copied.step()
        assert torch.equal(twin, param)
        torch.testing.assert_close(copied.last_grad_norm, opt.last_grad_norm)


@pytest.mark.parametrize("name", CLASSES)
def test_corrupt_state_is_an_error_before_anything_changes(name):
    """A state entry that is not a tensor, or a state that every stepped param has (exp_avg, square_avg,
    sum, ...) missing beside a step count, comes from a corrupt or foreign checkpoint: torch fails on it
    (AttributeError, KeyError), fusedopt replaced it with zeros and trained on under the old step count.
    (State of an option switched on later, such as amsgrad's, is still made: tests of each optimizer.)"""
    key = {"SGD": "momentum_buffer", "Adam": "exp_avg", "AdamW": "exp_avg_sq", "RMSprop": "square_avg",
           "Adagrad": "sum"}[name]
    params = [torch.nn.Parameter(torch.ones(3)) for _ in range(3)]
    opt = getattr(fusedopt.optim, name)([{"params": params[:1]}, {"params": params[1:]}], lr=0.1, **KWARGS[name])
    for p in params:
        p.grad = torch.ones(3)
    opt.step()
    for corrupt, message in [(lambda s: s.__setitem__(key, [1.0, 2.0, 3.0]), f"param 1: state '{key}' is a list"),
                             (lambda s: s.pop(key), f"param 1 of param group 1 has a step count but no state '{key}'")]:
        if name == "SGD" and "step count" in message:
            continue  # SGD keeps no step count: a missing buffer is made, as torch makes it
        saved = opt.state[params[2]][key]
        corrupt(opt.state[params[2]])
        snap = snapshot(opt)
        with pytest.raises(RuntimeError, match=message):
            opt.step()
        assert_unchanged(opt, snap)
        opt.state[params[2]][key] = saved
    opt.step()  # the state restored: steps again
