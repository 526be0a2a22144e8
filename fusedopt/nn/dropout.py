"""Dropout modules: subclasses of torch's (same constructor checks, repr and state_dict), whose forward
runs fusedopt's counter-based dropout (fusedopt.nn.functional)."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _fx
from . import functional as F

__all__ = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d"]


class Dropout(torch.nn.Dropout):
    def forward(self, input: Tensor) -> Tensor:
        return _fx.call_forward(self, input)

    def _fused_forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training, self.inplace)


class Dropout1d(torch.nn.Dropout1d):
    def forward(self, input: Tensor) -> Tensor:
        return _fx.call_forward(self, input)

    def _fused_forward(self, input: Tensor) -> Tensor:
        return F.dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(torch.nn.Dropout2d):
    def forward(self, input: Tensor) -> Tensor:
        return _fx.call_forward(self, input)

    def _fused_forward(self, input: Tensor) -> Tensor:
        return F.dropout2d(input, self.p, self.training, self.inplace)


class Dropout3d(torch.nn.Dropout3d):
    def forward(self, input: Tensor) -> Tensor:
        return _fx.call_forward(self, input)

    def _fused_forward(self, input: Tensor) -> Tensor:
        return F.dropout3d(input, self.p, self.training, self.inplace)
