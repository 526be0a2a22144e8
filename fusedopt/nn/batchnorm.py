"""BatchNorm1d/2d/3d and SyncBatchNorm on fusedopt's fused kernels: subclasses of torch's modules
(same constructors, state_dict keys, input checks), differing only in forward."""

from __future__ import annotations

import torch
from torch import Tensor

from . import _fx
from . import functional as F
from ._batch_norm_autograd import SyncBatchNormTrain, check_eps, verify_batch_size


class _FusedBatchNormForward:
    """forward of torch's _BatchNorm, with the batch-size and eps checks moved before
    num_batches_tracked changes (torch increments it first), on fusedopt.nn.functional.batch_norm."""

    def _averaging_factor(self) -> float:
        # momentum=None: cumulative moving average, 1 / number of batches seen.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return factor

    def _uses_batch_stats(self) -> bool:
        return self.training or (self.running_mean is None and self.running_var is None)

    def _stats_buffers(self):
        # Buffers are updated only when they exist and training; eval reads them when present.
        if not self.training or self.track_running_stats:
            return self.running_mean, self.running_var
        return None, None

    def forward(self, input: Tensor) -> Tensor:
        return _fx.call_forward(self, input)

    def _fused_forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        bn_training = self._uses_batch_stats()
        if bn_training:
            verify_batch_size(input.size())
        check_eps(self.eps, bn_training)
        running_mean, running_var = self._stats_buffers()
        if (running_mean is None) != (running_var is None):
            raise ValueError("running_mean and running_var must either both be None or neither be None")
        factor = self._averaging_factor()
        # Checked above: input, batch size, eps, buffers.
        return F._batch_norm_checked(input, running_mean, running_var, self.weight, self.bias, bn_training, factor,
                                    self.eps)


class BatchNorm1d(_FusedBatchNormForward, torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d on fused kernels. Input (N, C) or (N, C, L)."""


class BatchNorm2d(_FusedBatchNormForward, torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d on fused kernels. Input (N, C, H, W), contiguous or channels_last."""


class BatchNorm3d(_FusedBatchNormForward, torch.nn.BatchNorm3d):
    """torch.nn.BatchNorm3d on fused kernels. Input (N, C, D, H, W), contiguous or channels_last_3d."""


class SyncBatchNorm(_FusedBatchNormForward, torch.nn.SyncBatchNorm):
    """torch.nn.SyncBatchNorm on fused kernels, over any torch.distributed backend (gloo on CPU too).

    In training with more than one rank in the process group, every rank computes its local statistics
    in one pass, all-gathers (mean, var, count) and merges them by count, so uneven per-rank batches
    give exactly the statistics of the global batch; backward all-reduces the two per-channel sums.
    Otherwise (eval, one rank, no process group) it is BatchNorm on the local batch."""

    def _fused_forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        bn_training = self._uses_batch_stats()
        world_size, group = self._sync_group() if bn_training else (1, None)
        if world_size == 1:
            return super()._fused_forward(input)  # torch's order of checks: batch size, then eps
        check_eps(self.eps, bn_training)
        factor = self._averaging_factor()
        running_mean, running_var = self._stats_buffers()
        from .._ops.batch_norm import param_dtype

        pdtype = param_dtype(input)
        w = self.weight.to(pdtype) if self.weight is not None else None
        b = self.bias.to(pdtype) if self.bias is not None else None
        return SyncBatchNormTrain.apply(input, w, b, running_mean, running_var, self.eps, factor, group, world_size)

    def _sync_group(self):
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()):
            return 1, None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        return dist.get_world_size(group), group

    @classmethod
    def convert_sync_batchnorm(cls, module: torch.nn.Module, process_group=None) -> torch.nn.Module:
        """Returns `module` with every BatchNorm*D (torch's or fusedopt's) replaced by a fusedopt
        SyncBatchNorm sharing its parameters and buffers, as torch.nn.SyncBatchNorm.convert_sync_batchnorm."""
        out = module
        # As torch, a SyncBatchNorm is rebuilt too, so that it takes process_group.
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            out = cls(module.num_features, module.eps, module.momentum, module.affine,
                      module.track_running_stats, process_group)
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        del module
        return out
