"""Drop-in replacements for ``torch.nn.functional`` functions, backed by fusedopt's kernels."""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.autograd.forward_ad as _forward_ad
from torch import Tensor
from torch.overrides import handle_torch_function, has_torch_function_unary, has_torch_function_variadic

from fusedopt._dtypes import KERNEL_DTYPES
from fusedopt._ops import batch_norm as _bn_ops
from fusedopt._ops import dropout as _dropout_ops
from fusedopt._ops.batch_norm import param_dtype

from ._batch_norm_autograd import check_eps, update_running_stats, values_per_channel, verify_batch_size

__all__ = ["batch_norm", "dropout", "dropout1d", "dropout2d", "dropout3d"]


# ---- torch.func transforms and forward-mode AD --------------------------------------------------------


def _needs_torchs_autograd(*tensors: Optional[Tensor]) -> bool:
    """Whether these inputs are under a torch.func transform (grad, vjp, jacrev, vmap, ...) or carry
    forward-mode AD tangents. The autograd of our ops is a C++ torch::autograd::Function, which neither
    supports: the functions below then compute with torch's own batch_norm/dropout (same semantics; a
    direct call of the op raises instead, csrc/common/forward_ad.h). Constant False under
    torch.compile, which traces our ops."""
    if torch.compiler.is_compiling():
        return False
    if torch._C._are_functorch_transforms_active():
        return True
    if _forward_ad._current_level < 0:  # outside any forward_ad.dual_level()
        return False
    return any(isinstance(t, Tensor) and _forward_ad.unpack_dual(t).tangent is not None for t in tensors)


# ---- batch norm ------------------------------------------------------------------------------------


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """torch.nn.functional.batch_norm on fusedopt's fused kernels (one reduction pass and one
    elementwise pass forward, the same backward). Running statistics are updated in place when given
    and training."""
    if has_torch_function_variadic(input, running_mean, running_var, weight, bias):
        return handle_torch_function(batch_norm, (input, running_mean, running_var, weight, bias), input,
                                     running_mean, running_var, weight=weight, bias=bias, training=training,
                                     momentum=momentum, eps=eps)
    if not isinstance(training, bool):
        raise TypeError(f"batch_norm(): argument 'training' (position 6) must be bool, not {_type_name(training)}")
    if input.dim() < 2:
        raise ValueError(f"batch_norm: expected input with at least 2 dimensions (N, C, ...), got {input.dim()}-d")
    if training:
        verify_batch_size(input.size())
    check_eps(eps, training)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if momentum is None:  # torch's argument error (modules resolve momentum=None themselves)
        raise TypeError("batch_norm(): argument 'momentum' (position 7) must be float, not NoneType")
    if not training and running_mean is None:
        raise RuntimeError("batch_norm: running_mean and running_var must be defined in evaluation mode "
                           "(training=False)")
    return _batch_norm_checked(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _batch_norm_checked(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                       weight: Optional[Tensor], bias: Optional[Tensor], training: bool, momentum: float,
                       eps: float) -> Tensor:
    """batch_norm once its arguments are checked (the modules check them themselves, before
    num_batches_tracked changes)."""
    if input.numel() == 0:
        # As torch, in training and eval alike, before it looks at the sizes of the other arguments: no
        # statistics of an empty batch (they would be NaN) and no running-stats update; the output keeps
        # the input's layout and stays in the graph of weight and bias (zero grads, not None).
        out = input.clone()
        if weight is not None:
            out = out * weight[0]
        if bias is not None:
            out = out + bias[0]
        return out
    if running_mean is not None and (running_mean.requires_grad or running_var.requires_grad) and \
            torch.is_grad_enabled():
        name = "running_mean" if running_mean.requires_grad else "running_var"
        raise RuntimeError(f"The function 'batch_norm' is not differentiable with respect to argument '{name}'. "
                           "This input cannot have requires_grad True.")
    if _needs_torchs_autograd(input, weight, bias):
        return torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias, training, momentum,
                                              eps)
    try:
        # Weights and statistics enter the kernels in the math dtype (float32, float64 for float64 input).
        pdtype = param_dtype(input)
        w = weight.to(pdtype) if weight is not None else None
        b = bias.to(pdtype) if bias is not None else None
        if training:
            out, mean, var = _bn_ops.batch_norm_train(input, w, b, eps)
            if running_mean is not None:
                update_running_stats(running_mean, running_var, mean, var, values_per_channel(input), momentum)
            return out
        return _bn_ops.batch_norm_elemt(input, w, b, running_mean.detach().to(pdtype),
                                        running_var.detach().to(pdtype), eps)
    except RuntimeError:
        # The ops refuse a wrong-sized argument before writing anything; say it in torch's words (the
        # check costs nothing on the path that succeeds).
        _check_channel_counts(input, running_mean, running_var, weight, bias)
        raise


def _check_channel_counts(input: Tensor, *args: Optional[Tensor]) -> None:
    channels = input.shape[1]
    for name, t in zip(("running_mean", "running_var", "weight", "bias"), args):
        if t is not None and t.numel() != channels:
            raise RuntimeError(f"{name} should contain {channels} elements not {t.numel()}")


# ---- dropout --------------------------------------------------------------------------------------
# Masks come from counter-based Philox (csrc/include/fusedopt/dropout.h): seed and offset from the
# default generator of the input's device, so torch.manual_seed reproduces a run. Only a packed bit mask
# (numel / 8 bytes; channel-wise: N * C / 8) is kept for backward. The output is laid out like the
# input, as torch's is (keep_layout=True: a channels-last or transposed input is read where it is, and
# its output stays channels-last or transposed for the next layer); element-wise mask bits follow the
# output's memory order, channel-wise ones are one per (n, c) whatever the layout.


def _check_p(p: float) -> None:
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _type_name(obj) -> str:
    """The type's name as CPython's tp_name spells it in torch's argument errors ("numpy.bool", "int")."""
    t = type(obj)
    if t.__flags__ & (1 << 9) or t.__module__ == "builtins":  # Py_TPFLAGS_HEAPTYPE: the bare name
        return t.__name__
    return f"{t.__module__}.{t.__qualname__}"


def _check_call(name: str, input, p: float, training, inplace: bool) -> None:
    """What torch's ``_VF.<name>`` call checks, raised where its functional makes that call (after its own
    range check, dimension checks and warnings): the argument types, then ATen's probability check,
    which rejects NaN (every comparison with NaN is false, so NaN passes the range check above), in
    training and evaluation alike."""
    op = name + "_" if inplace else name
    if name == "dropout" and not isinstance(input, Tensor):
        raise TypeError(f"{op}(): argument 'input' (position 1) must be Tensor, not {_type_name(input)}")
    if not isinstance(training, bool):
        raise TypeError(f"{op}(): argument 'train' (position 3) must be bool, not {_type_name(training)}")
    if p != p:
        sign = "-" if math.copysign(1.0, float(p)) < 0 else ""  # as C++ prints it
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {sign}nan")


def _check_unbatched_inplace(input: Tensor) -> None:
    """torch's in-place error for an unbatched input to dropout1d/3d: torch unsqueezes the input itself
    (unsqueeze_), so it names the input where the op, handed our unsqueezed view, would name a view.
    (The op checks its own input, before writing, in csrc/common/dropout_autograd.cpp.)"""
    if input.requires_grad and torch.is_grad_enabled():
        if input.is_leaf:
            raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
        base = input._base
        if base is not None and base.is_leaf:
            raise RuntimeError("a view of a leaf Variable that requires grad is being used in an in-place "
                               "operation.")


def _apply(input: Tensor, p: float, training: bool, inplace: bool, channel_wise: bool,
           caller_input: Optional[Tensor] = None) -> Tensor:
    # torch returns the input itself when nothing is dropped, before looking at its shape.
    if p == 0 or not training or input.numel() == 0:
        return input
    if p == 1 and (input.dtype not in KERNEL_DTYPES or input.layout != torch.strided):
        # torch drops everything as input * 0 before it looks at the dtype, layout or shape: zeros of
        # any dtype (integer, bool, complex) and layout, where the kernels take dense floats only. (For a
        # sparse input torch's multiplier is a sparse zero, and its result is garbage: a torch bug, not
        # followed; see tests/test_dropout.py.)
        zero = torch.zeros((), dtype=input.dtype, device=input.device)
        return input.mul_(zero) if inplace else input.mul(zero)
    group_size = 1
    if channel_wise:
        if input.dim() >= 2:
            group_size = math.prod(input.shape[2:])
        elif p != 1:
            # torch drops everything (input * 0) at p = 1 before it looks at the shape: no channels
            # needed then (group_size 1, every element dropped).
            raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    if inplace:
        if caller_input is not None:
            _check_unbatched_inplace(caller_input)
        return _dropout_ops.dropout_(input, p, group_size, keep_layout=True)
    return _dropout_ops.dropout(input, p, group_size, keep_layout=True)[0]


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """As :func:`torch.nn.functional.dropout`, with fusedopt's own masks; the output is laid out like
    input, as torch's is."""
    if has_torch_function_unary(input):
        return handle_torch_function(dropout, (input,), input, p=p, training=training, inplace=inplace)
    if _needs_torchs_autograd(input):
        return torch.nn.functional.dropout(input, p, training, inplace)
    _check_p(p)
    _check_call("dropout", input, p, training, inplace)
    return _apply(input, p, training, inplace, channel_wise=False)


def _channel_dropout(input: Tensor, p: float, training: bool, inplace: bool, batched: bool) -> Tensor:
    """dropout1d/2d/3d once their shape rules are applied: torch's feature dropout of input, or of
    input with a batch dimension added (batched=False)."""
    _check_call("feature_dropout", input, p, training, inplace)
    if batched:
        return _apply(input, p, training, inplace, channel_wise=True)
    # torch unsqueezes the input itself in place (unsqueeze_) and squeezes it back afterwards; an error
    # in between (a NaN p, a 0-d input) leaves it unsqueezed, and unsqueeze_ refuses a leaf that
    # requires grad even where nothing is written (evaluation, p = 0). A view changes nothing of input.
    result = _apply(input.unsqueeze(0), p, training, inplace, channel_wise=True, caller_input=input)
    # In place, the input (now holding the result) is returned itself, as torch does.
    return input if inplace else result.squeeze(0)


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """As :func:`torch.nn.functional.dropout1d`: channel-wise, on (N, C, L) or (C, L) inputs."""
    if has_torch_function_unary(input):
        return handle_torch_function(dropout1d, (input,), input, p=p, training=training, inplace=inplace)
    if _needs_torchs_autograd(input):
        return torch.nn.functional.dropout1d(input, p, training, inplace)
    _check_p(p)
    inp_dim = input.dim()
    if inp_dim not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {inp_dim}D input. "
            "Note that dropout1d exists to provide channel-wise dropout on inputs with 1 "
            "spatial dimension, a channel dimension, and an optional batch dimension "
            "(i.e. 2D or 3D inputs).")
    return _channel_dropout(input, p, training, inplace, batched=inp_dim == 3)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """As :func:`torch.nn.functional.dropout2d`: channel-wise on (N, C, H, W); a 3-D input is taken as
    (N, C, L) with a warning, as torch does."""
    if has_torch_function_unary(input):
        return handle_torch_function(dropout2d, (input,), input, p=p, training=training, inplace=inplace)
    if _needs_torchs_autograd(input):
        return torch.nn.functional.dropout2d(input, p, training, inplace)
    _check_p(p)
    inp_dim = input.dim()
    if inp_dim not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {inp_dim}-D input to dropout2d, which is deprecated "
            "and will result in an error in a future release. To retain the behavior "
            "and silence this warning, please use dropout instead. Note that dropout2d "
            "exists to provide channel-wise dropout on inputs with 2 spatial dimensions, "
            "a channel dimension, and an optional batch dimension (i.e. 3D or 4D inputs).",
            stacklevel=2)
    if inp_dim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
            "1D dropout behavior is desired - input is interpreted as shape (N, C, L), where C "
            "is the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=2)
    return _channel_dropout(input, p, training, inplace, batched=True)


def dropout3d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """As :func:`torch.nn.functional.dropout3d`: channel-wise on (N, C, D, H, W) or (C, D, H, W)."""
    if has_torch_function_unary(input):
        return handle_torch_function(dropout3d, (input,), input, p=p, training=training, inplace=inplace)
    if _needs_torchs_autograd(input):
        return torch.nn.functional.dropout3d(input, p, training, inplace)
    _check_p(p)
    inp_dim = input.dim()
    if inp_dim not in (4, 5):
        warnings.warn(
            f"dropout3d: Received a {inp_dim}-D input to dropout3d, which is deprecated "
            "and will result in an error in a future release. To retain the behavior "
            "and silence this warning, please use dropout instead. Note that dropout3d "
            "exists to provide channel-wise dropout on inputs with 3 spatial dimensions, "
            "a channel dimension, and an optional batch dimension (i.e. 4D or 5D inputs).",
            stacklevel=2)
    return _channel_dropout(input, p, training, inplace, batched=inp_dim == 5)
