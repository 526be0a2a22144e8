"""End-to-end training step: a small CNN with BatchNorm and Dropout, trained with AdamW and gradient
clipping on synthetic data; torch's modules and optimizer against fusedopt's, and torch's model under
torch.compile (forward and, through AOTAutograd, backward compiled; clip and fused AdamW eager). One
call is a whole step (zero_grad, forward, loss, backward, clip, step); the table's time is per step
(steps/s = 1000 / ms).
"""

from __future__ import annotations

import torch
from torch import nn

import fusedopt
from harness import OPTIONS, Case, Variant, warmed

MAX_GRAD_NORM = 1.0


def _model(norm: type, dropout: type, width: int, classes: int = 10) -> nn.Module:
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), norm(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, width, 1), *block(width, width, 1), *block(width, 2 * width, 2),
        *block(2 * width, 2 * width, 1), *block(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4 * width, 256), nn.ReLU(), dropout(0.5), nn.Linear(256, classes))


def _step_fn(fused_modules: bool, optimizer: str, device: str, batch: int, width: int, image: int,
             compile_model: bool = False):
    def setup():
        torch.manual_seed(0)
        if fused_modules:
            model = _model(fusedopt.nn.BatchNorm2d, fusedopt.nn.Dropout, width)
        else:
            model = _model(nn.BatchNorm2d, nn.Dropout, width)
        model = model.to(device).train()
        params = list(model.parameters())
        forward = torch.compile(model) if compile_model else model
        if optimizer == "fusedopt folded clip":
            opt = fusedopt.optim.AdamW(params, lr=1e-3, weight_decay=0.01, max_grad_norm=MAX_GRAD_NORM)
        elif optimizer == "fusedopt":
            opt = fusedopt.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        else:
            opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **{optimizer: True})
        clip = (fusedopt.nn.utils.clip_grad_norm_ if optimizer == "fusedopt"
                else (torch.nn.utils.clip_grad_norm_ if optimizer != "fusedopt folded clip" else None))
        x = torch.randn(batch, 3, image, image, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(forward(x), y)
            loss.backward()
            if clip is not None:
                clip(params, MAX_GRAD_NORM)
            opt.step()

        return warmed(step) if compile_model else step

    return setup


def training_cases(device: str, dtype: torch.dtype, param_sets) -> list[Case]:
    del param_sets  # this group builds its own model
    quick = OPTIONS.quick
    batch, width, image = (8, 8, 16) if quick else ((256, 64, 32) if device.startswith("cuda") else (32, 16, 32))
    shape = f"batch {batch}, width {width}, {image}x{image}"
    variants = [
        Variant("torch modules, foreach AdamW + clip", _step_fn(False, "foreach", device, batch, width, image), True),
        Variant("torch modules, fused AdamW + clip", _step_fn(False, "fused", device, batch, width, image), True),
    ]
    if OPTIONS.compile:
        variants.append(Variant("torch compiled model, fused AdamW + clip",
                                _step_fn(False, "fused", device, batch, width, image, compile_model=True),
                                is_torch=True, compiled=True))
    variants += [
        Variant("torch modules, fusedopt AdamW + clip", _step_fn(False, "fusedopt", device, batch, width, image)),
        Variant("fusedopt", _step_fn(True, "fusedopt folded clip", device, batch, width, image)),
    ]
    n_params = sum(p.numel() for p in _model(nn.BatchNorm2d, nn.Dropout, width).parameters())
    return [Case("training", f"CNN step, {shape}", device, "float32", n_params, 0, None, variants)]


GROUPS = {"training": training_cases}
