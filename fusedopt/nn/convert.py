"""Swapping torch modules for their fusedopt counterparts in an existing model."""

from __future__ import annotations

import torch

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, SyncBatchNorm
from .dropout import Dropout, Dropout1d, Dropout2d, Dropout3d

# torch class -> fusedopt class, per family. Each fusedopt class subclasses its torch class and adds no
# state of its own, which is what lets convert_modules swap instances in place.
BATCHNORM_MODULE_MAP: dict[type, type] = {
    torch.nn.BatchNorm1d: BatchNorm1d,
    torch.nn.BatchNorm2d: BatchNorm2d,
    torch.nn.BatchNorm3d: BatchNorm3d,
    torch.nn.SyncBatchNorm: SyncBatchNorm,
}

DROPOUT_MODULE_MAP: dict[type, type] = {
    torch.nn.Dropout: Dropout,
    torch.nn.Dropout1d: Dropout1d,
    torch.nn.Dropout2d: Dropout2d,
    torch.nn.Dropout3d: Dropout3d,
}

# Every family's map.
MODULE_MAP: dict[type, type] = {
    **BATCHNORM_MODULE_MAP,
    **DROPOUT_MODULE_MAP,
}


def _swapped(module: torch.nn.Module) -> torch.nn.Module:
    new_cls = MODULE_MAP[type(module)]
    assert issubclass(new_cls, type(module)), f"{new_cls} must subclass {type(module)}"
    # The same object under the fusedopt class: parameters, buffers, hooks, training mode and every
    # attribute stay exactly as they were (optimizers keep pointing at the same Parameters).
    module.__class__ = new_cls
    return module


def convert_modules(model: torch.nn.Module) -> torch.nn.Module:
    """Replaces, in place, every module of `model` whose exact type is a key of MODULE_MAP by its
    fusedopt counterpart (subclasses of those torch types are left alone: they may override forward).
    Returns `model` (itself converted if its own type is in MODULE_MAP)."""
    for module in list(model.modules()):
        if type(module) in MODULE_MAP:
            _swapped(module)
    return model
