"""fusedopt under torch.compile, as users compile with torch's own classes: PyTorch's compiled-optimizer
recipe (``torch.compile(opt.step)``), a compiled training step that calls the optimizer, and clipping
and BatchNorm inside a graph (``fullgraph=True``)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import fusedopt
from conftest import DEVICES

OPTIMIZERS = [
    (fusedopt.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (fusedopt.optim.Adam, dict(lr=0.1, amsgrad=True)),
    (fusedopt.optim.AdamW, dict(lr=0.1, max_grad_norm=0.5)),
    (fusedopt.optim.RMSprop, dict(lr=0.1, momentum=0.5, centered=True)),
    (fusedopt.optim.Adagrad, dict(lr=0.1, lr_decay=0.01)),
]
IDS = [cls.__name__ for cls, _ in OPTIMIZERS]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _twin_params(device, n=6):
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (7,), (), (0,), (2, 3, 4), (33,)][:n]
    made = [torch.randn(s, generator=g, dtype=torch.float64).float().to(device) for s in shapes]
    return [torch.nn.Parameter(t.clone()) for t in made], [torch.nn.Parameter(t.clone()) for t in made]


def _set_grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).float().to(p.device) * 3


def _no_trace_warnings(caught):
    """dynamo warns for each C++ call it cannot trace; it must never be asked to trace into a step."""
    messages = [str(w.message) for w in caught if "Dynamo does not know how to trace" in str(w.message)]
    assert not messages, messages[0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS, ids=IDS)
def test_compiled_step_runs_the_fused_step_as_it_is(cls, kwargs, device):
    """PyTorch's compiled-optimizer recipe: the step is not traced (it is one fused op per group
    already, and tracing would only break the graph at every C++ call), so a compiled step is the
    eager step, to the bit."""
    ours, twins = _twin_params(device)
    compiled_opt, eager_opt = cls(ours, **kwargs), cls(twins, **kwargs)
    compiled_step = torch.compile(compiled_opt.step, backend="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            _set_grads(ours, step)
            _set_grads(twins, step)
            compiled_step()
            eager_opt.step()
    _no_trace_warnings(caught)
    for a, b in zip(ours, twins):
        assert torch.equal(a, b)
    for a, b in zip(ours, twins):
        for key, value in eager_opt.state[b].items():
            assert torch.equal(compiled_opt.state[a][key], value), key


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls,kwargs", OPTIMIZERS, ids=IDS)
def test_compiled_training_step_matches_eager(cls, kwargs, device):
    """forward, backward, clip_grad_norm_ and the step in one compiled function (graph breaks allowed
    at the step) give what the same function gives uncompiled."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), fusedopt.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 2)).to(device)
    twin = torch.nn.Sequential(torch.nn.Linear(6, 8), fusedopt.nn.BatchNorm1d(8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 2)).to(device)
    twin.load_state_dict(model.state_dict())
    opts = cls(model.parameters(), **kwargs), cls(twin.parameters(), **kwargs)

    def train_step(m, opt, x):
        loss = m(x).square().mean()
        loss.backward()
        fusedopt.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss

    compiled = torch.compile(train_step, backend="aot_eager")
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(16, 6, generator=g).to(device)
        loss = compiled(model, opts[0], x)
        ref = train_step(twin, opts[1], x)
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
def test_clipping_compiles_into_one_graph(norm_type, backend, device):
    """clip_grad_norm_, get_total_norm and clip_grads_with_norm_ trace with fullgraph=True, as torch's
    do, and clip as they do uncompiled: float64 reference (torch itself takes a float16 tensor's norm in
    float16); mixed dtypes and a view with gaps take the general path."""
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(5, 3, generator=g) * 4, torch.randn(7, generator=g, dtype=torch.float64),
             torch.randn(9, 4, generator=g)[:, ::2], torch.randn(33, generator=g).half()]
    grads = [t.to(device) for t in grads]
    params = [torch.nn.Parameter(torch.zeros_like(t)) for t in grads]
    norm64 = torch.linalg.vector_norm(torch.cat([t.double().flatten() for t in grads]), norm_type)
    coef = torch.clamp(0.5 / (norm64 + 1e-6), max=1.0)

    def clip(params):
        return fusedopt.nn.utils.clip_grad_norm_(params, 0.5, norm_type)

    def total_then_clip(params):
        norm = fusedopt.nn.utils.get_total_norm([p.grad for p in params], norm_type)
        fusedopt.nn.utils.clip_grads_with_norm_(params, 0.5, norm)
        return norm

    for fn in (clip, total_then_clip):
        for p, t in zip(params, grads):
            p.grad = t.clone()
        norm = torch.compile(fn, backend=backend, fullgraph=True)(params)
        assert norm.dtype == torch.float64  # a float64 grad is present
        torch.testing.assert_close(norm, norm64, rtol=1e-6, atol=0)
        for p, t in zip(params, grads):
            half = t.dtype == torch.half
            torch.testing.assert_close(p.grad, (t.double() * coef).to(t.dtype), rtol=1e-3 if half else 1e-6,
                                       atol=1e-3 if half else 1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_batchnorm_compiles_into_one_graph(memory_format, device):
    torch.manual_seed(3)
    ours, ref = fusedopt.nn.BatchNorm2d(4).to(device), torch.nn.BatchNorm2d(4).to(device)
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    for _ in range(2):
        x = torch.randn(3, 4, 5, 6, device=device).to(memory_format=memory_format)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = compiled(xa), ref(xb)
        weights = torch.randn_like(ya)
        (ya * weights).sum().backward()
        (yb * weights).sum().backward()
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-5)
