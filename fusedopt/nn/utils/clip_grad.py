"""Gradient clipping as ``torch.nn.utils``: the total norm in one fused pass per device
(``torch.ops.fusedopt.total_norm``) and the scaling in another (``torch.ops.fusedopt.clip_by_total_norm_``),
both without host synchronisation (``error_if_nonfinite=True`` is the only one, as in torch).

Same signatures, defaults, return values and errors as torch 2.13, with two deliberate differences:

- The norm is accumulated and returned in float32 (float64 when any tensor is float64) also when every
  tensor is float16/bfloat16, where torch returns (and clips with) a float16/bfloat16 norm: a norm
  beyond float16's range is then correct rather than inf (torch zeroes every gradient in that case).
- ``foreach`` is accepted and ignored (the fused path is always taken); tensors must live on CPU or CUDA.

Sparse COO gradients (``nn.Embedding(sparse=True)``) are taken as torch 2.14 takes them, on every torch
version (torch 2.13 refuses them in the norm): the norm of such a tensor is the norm of its coalesced
values (duplicate indices summed first; the elements it does not store are not counted, which matters
for the -inf and negative orders only), computed by the fused op (float32 for float16/bfloat16 values,
as for dense tensors) and combined with the dense tensors' fused norms as torch combines per-tensor
norms; a tensor without values is empty (the inf and negative orders refuse it, as torch does). They
are scaled in place by ``grad.mul_(coef)``, as torch does, and stay uncoalesced if they were. Lists
without a sparse tensor take the fused paths unchanged. ``clip_grad_value_`` refuses them (torch's
clamp has no sparse kernel) before any gradient changes. Other sparse layouts (CSR, CSC, BSR, BSC) and
sparse DTensors are refused with a ``NotImplementedError`` naming the entry.

Gradients that are DTensors (FSDP2, tensor parallelism) are reduced over their mesh: each rank computes
the norm of its local shards with the fused op, and the p-th powers (max/min for +-inf) are all-reduced
over the mesh dimensions the gradients are sharded on (Shard, _StridedShard), not over those they are
replicated on; Partial gradients are reduced first, as torch does. The result is then a DTensor
replicated on that mesh.
"""

from __future__ import annotations

import types
import typing
import warnings

import torch
from torch import Tensor
from torch import _prims_common

from ... import _C
from ..._device import to_device
from ..._dtypes import KERNEL_DTYPES

_tensor_or_tensors = typing.Union[Tensor, typing.Iterable[Tensor]]
_INF = float("inf")


def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


def _check_tensor(t, what: str, index: int) -> None:
    # Where torch.nn.utils raises too, the exception is of its type: a first entry that is no tensor
    # (AttributeError), a later None entry, an integer or bool dtype (RuntimeError), a later non-tensor
    # (TypeError), a floating dtype without norm kernels such as float8 (NotImplementedError).
    # Sparse COO tensors pass (taken by the Python path, as torch 2.14 takes them). The other refusals
    # are fusedopt's own: torch takes complex tensors and devices other than CPU and CUDA, scales
    # sparse compressed (CSR, ...) grads in clip_grads_with_norm_, and fails in the norm of one with a
    # RuntimeError of its internals.
    if index == 0 and not isinstance(t, Tensor):  # torch reads tensors[0].device first
        raise AttributeError(f"{what}[0] is {'None' if t is None else 'a ' + type(t).__name__}; expected a Tensor "
                             f"('{type(t).__name__}' object has no attribute 'device')")
    if t is None:
        raise RuntimeError(f"{what}[{index}] is None; expected a Tensor")
    if not isinstance(t, Tensor):
        raise TypeError(f"{what}[{index}] is a {type(t).__name__}; expected a Tensor")
    if t.dtype not in KERNEL_DTYPES:
        message = (f"{what}[{index}] has dtype {t.dtype}; fusedopt's clipping supports float32, float64, "
                   "float16 and bfloat16")
        if not (t.dtype.is_floating_point or t.dtype.is_complex):  # integer and bool dtypes
            raise RuntimeError(message + " (expected a floating point tensor)")
        if t.dtype.is_floating_point:
            raise NotImplementedError(message)
        raise TypeError(message + " (use torch.nn.utils for other dtypes)")
    if t.layout != torch.strided:
        if t.layout != torch.sparse_coo:
            raise NotImplementedError(f"{what}[{index}] has layout {t.layout}; fusedopt's clipping takes dense "
                                      "(strided) and sparse COO tensors")
        dtensor = _dtensor_type()
        if dtensor is not None and isinstance(t, dtensor):
            raise NotImplementedError(f"{what}[{index}] is a DTensor with layout {t.layout}; fusedopt's "
                                      "clipping takes sparse COO tensors as plain tensors only")
    if t.device.type not in ("cpu", "cuda"):
        raise RuntimeError(f"{what}[{index}] is on {t.device}; fusedopt's clipping runs on CPU and CUDA only")


def _fills_memory(t: Tensor) -> bool:
    """Whether t's elements are exactly its memory (any order): what the kernels walk."""
    return t.is_contiguous() or _prims_common.is_non_overlapping_and_dense_or_false(t)


def _dense(t: Tensor) -> Tensor:
    # The kernels need tensors that fill their memory (any order); a view with gaps is read via a copy.
    return t if _fills_memory(t) else t.contiguous()


def _is_sparse(t: Tensor) -> bool:
    return t.layout == torch.sparse_coo


def _sparse_values(t: Tensor) -> Tensor:
    """The values whose norm is a sparse COO tensor's norm in torch 2.14: those of the coalesced tensor
    (duplicate indices summed; elements not stored are not counted), dense for the kernels."""
    return _dense((t if t.is_coalesced() else t.coalesce())._values())


def _without_elements(t: Tensor) -> bool:
    """Whether t's norm is of no element: no element at all, or a sparse tensor without values."""
    return t.numel() == 0 or (_is_sparse(t) and t._values().numel() == 0)


def _local_norms(tensors: list[Tensor], norm_type: float, n_sparse: int = 0) -> list[Tensor]:
    """One fused norm per device, in order of first appearance, of the dense tensors; then (n_sparse:
    how many tensors are sparse COO) one per sparse tensor, of its coalesced values (torch 2.14's
    norm of a sparse tensor)."""
    sparse = []
    if n_sparse:
        sparse = [t for t in tensors if _is_sparse(t)]
        tensors = [t for t in tensors if not _is_sparse(t)]
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(_dense(t))
    norms = [torch.ops.fusedopt.total_norm(ts, norm_type) for ts in by_device.values()]
    return norms + [torch.ops.fusedopt.total_norm([_sparse_values(t)], norm_type) for t in sparse]


def _combine(norms: list[Tensor], norm_type: float, device: torch.device) -> Tensor:
    """The norm of the concatenation of the parts whose norms are given (torch's own combination)."""
    if len(norms) == 1:
        return norms[0].to(device)
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]), norm_type)


def _shard_types() -> tuple[type, ...]:
    from torch.distributed.tensor import Shard
    try:  # FSDP2 over a tensor-parallel dim; not a Shard subclass (nor is_shard()) in torch 2.13
        from torch.distributed.tensor.placement_types import _StridedShard
    except ImportError:
        return (Shard,)
    return (Shard, _StridedShard)


def _norm_layout(t, shard_types: tuple[type, ...]) -> tuple[tuple[int, ...], Tensor]:
    """(mesh dims t is sharded on, the local tensor whose norm is this rank's part of t's norm)."""
    from torch.distributed.tensor import Partial, Replicate
    dims = []
    partial = False
    for mesh_dim, placement in enumerate(t.placements):
        if isinstance(placement, shard_types):
            dims.append(mesh_dim)
        elif isinstance(placement, Partial):
            partial = True
        elif not isinstance(placement, Replicate):
            raise ValueError(f"fusedopt.nn.utils: a DTensor gradient has placement {placement}; "
                             "expected Shard, Replicate or Partial placements")
    if partial:
        # Pending sums (e.g. the grads of replicated params fed sequence-parallel activations, as
        # SequenceParallel's norm layers are) are reduced first, as torch's norm does: an all-reduce
        # each, in the same order on every rank. Scaling the grads needs none (it is linear).
        t = t.redistribute(t.device_mesh, [Replicate() if isinstance(pl, Partial) else pl for pl in t.placements])
    return tuple(dims), t._local_tensor


def _dtensor_total_norm(tensors: list, norm_type: float):
    """Norm of DTensors: the local shards' norm by the fused op, then all-reduced over the sharded
    mesh dimensions (grouped by mesh and sharded dims); a DTensor replicated on the mesh."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Replicate
    # One mesh, by equality: FSDP2 over a tensor-parallel model gives each param a DeviceMesh object
    # of its own, all equal.
    mesh = tensors[0].device_mesh
    for t in tensors:
        if t.device_mesh is not mesh and t.device_mesh != mesh:
            raise ValueError("fusedopt.nn.utils: DTensor gradients live on different device meshes; "
                             "expected one mesh")
    shard_types = _shard_types()
    groups: dict[tuple[int, ...], list[Tensor]] = {}
    for t in tensors:
        dims, local = _norm_layout(t, shard_types)
        groups.setdefault(dims, []).append(local)
    device = tensors[0]._local_tensor.device
    parts = []
    for dims, local in groups.items():
        norm = _combine(_local_norms(local, norm_type), norm_type, device)
        if not dims:
            parts.append(norm)
            continue
        if norm_type == _INF or norm_type == -_INF:
            value, op = norm, dist.ReduceOp.MAX if norm_type > 0 else dist.ReduceOp.MIN
        else:
            value, op = norm.pow(norm_type), dist.ReduceOp.SUM
        for d in dims:
            dist.all_reduce(value, op=op, group=mesh.get_group(d))
        if norm_type not in (_INF, -_INF):
            value = value.pow(1.0 / norm_type)
        parts.append(value)
    total = _combine(parts, norm_type, device)
    return DTensor.from_local(total, mesh, [Replicate()] * mesh.ndim, run_check=False)


@torch.no_grad()
def get_total_norm(
    tensors: _tensor_or_tensors,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    r"""Compute the norm of an iterable of tensors, as :func:`torch.nn.utils.get_total_norm`.

    Args:
        tensors (Iterable[Tensor] or Tensor): an iterable of Tensors or a single Tensor
        norm_type (float): type of the used p-norm. Can be ``'inf'`` for infinity norm.
        error_if_nonfinite (bool): if True, an error is thrown if the total norm is ``nan``, ``inf``,
            or ``-inf``. Default: ``False``
        foreach (bool): accepted for compatibility; the fused path is always used.

    Returns:
        Total norm of the tensors (viewed as a single vector): float32, or float64 when any tensor is
        float64. ``norm_type=0`` follows torch's definition (the number of tensors that have a nonzero
        element, since torch takes the 0-"norm" of the per-tensor counts) and is computed per tensor.
    """
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    else:
        tensors = list(tensors)
    return _total_norm(tensors, float(norm_type), error_if_nonfinite, foreach=foreach)


def _survey(tensors: list, what: str) -> tuple[int, bool, bool, int]:
    """(number of DTensors, every plain dense tensor fills its memory, all on one device, number of
    sparse COO tensors), in one C++ pass; raises as torch would, naming the first entry the fused
    kernels cannot take. A list with a sparse COO tensor (refused by the C++ pass) is surveyed in
    Python: lists without one never pay for them."""
    if torch.compiler.is_compiling():
        return _python_survey(tensors, what)
    first_bad, n_dtensors, all_dense, one_device = _C.survey_tensors(tensors)
    if first_bad >= 0:
        if getattr(tensors[first_bad], "layout", None) == torch.sparse_coo:
            return _python_survey(tensors, what)
        _check_tensor(tensors[first_bad], what, first_bad)
        raise AssertionError(f"{what}[{first_bad}] was refused by the survey but passes the checks")
    return n_dtensors, all_dense, one_device, 0


def _python_survey(tensors: list, what: str) -> tuple[int, bool, bool, int]:
    """_survey in Python: for torch.compile (dynamo cannot trace into _C.survey_tensors, and with this
    the clipping functions compile into one graph, fullgraph=True, around the fused ops), and for lists
    that hold a sparse COO tensor."""
    dtensor = _dtensor_type()
    n_dtensors, all_dense, devices, n_sparse = 0, True, set(), 0
    for index, t in enumerate(tensors):
        _check_tensor(t, what, index)
        if dtensor is not None and isinstance(t, dtensor):
            n_dtensors += 1
        elif _is_sparse(t):
            n_sparse += 1
        else:
            all_dense = all_dense and _fills_memory(t)
        devices.add(t.device)
    return n_dtensors, all_dense, len(devices) == 1, n_sparse


def _check_no_empty_tensor(tensors: list, norm_type: float, foreach: bool | None, n_sparse: int = 0) -> None:
    """torch takes the norm of each tensor first, and the inf and negative-order norms of an empty
    tensor (a max, or a sum of negative powers) have no identity: an error with torch's message
    (_foreach_norm's for inf, linalg.vector_norm's otherwise), although the norm of the elements there
    are would exist. A sparse tensor without values is empty too (torch 2.14 takes the norm of its
    values): _foreach_norm passes it on to linalg.vector_norm, so the message is _foreach_norm's only
    if the first empty tensor has no element at all (within one device and dtype that is torch's
    order; across them torch's order is that of a hash map, not followed here)."""
    if n_sparse:
        first = next((t for t in tensors if _without_elements(t)), None)
        if first is None:
            return
        no_element = first.numel() == 0
    elif any(t.numel() == 0 for t in tensors):
        no_element = True
    else:
        return
    if norm_type == _INF and foreach is not False and no_element:
        raise RuntimeError("_foreach_norm cannot compute the infinity norm on an empty tensor because the "
                           "operation does not have an identity")
    raise RuntimeError(f"linalg.vector_norm cannot compute the {norm_type:g} norm on an empty tensor because "
                       "the operation does not have an identity")  # (%g: as C++ prints a double)


def _nan_order_norm(tensors: list, n_dtensors: int) -> Tensor:
    """torch's total norm of order NaN. NaN is no order, but torch computes one: linalg.vector_norm of no
    element is 0 and of a single element its absolute value whatever the order, and NaN otherwise; the
    total is that norm of the stacked per-tensor norms (so NaN for two tensors or more)."""
    if n_dtensors:
        raise NotImplementedError("fusedopt.nn.utils: norm_type=nan is not supported for DTensors")
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    if len(tensors) == 1:
        only = _sparse_values(tensors[0]) if _is_sparse(tensors[0]) else tensors[0]
        if only.numel() <= 1:
            return only.detach().abs().to(dtype).sum()  # 0 for no element, |x| for one
    return torch.full((), float("nan"), dtype=dtype, device=tensors[0].device)


def _total_norm(tensors: list, norm_type: float, error_if_nonfinite: bool,
                survey: tuple[int, bool, bool, int] | None = None, foreach: bool | None = None) -> Tensor:
    if len(tensors) == 0:
        return torch.tensor(0.0)
    n_dtensors, all_dense, one_device, n_sparse = survey or _survey(tensors, "tensors")
    if n_dtensors not in (0, len(tensors)):
        raise ValueError("fusedopt.nn.utils: tensors mix DTensors and plain tensors; expected one kind")
    if norm_type == _INF or norm_type < 0:
        _check_no_empty_tensor(tensors, norm_type, foreach, n_sparse)
    if norm_type != norm_type:
        total = _nan_order_norm(tensors, n_dtensors)
    elif norm_type == 0:
        # torch: vector_norm(stack(per-tensor nonzero counts), 0) = tensors with a nonzero element.
        if n_dtensors:
            raise NotImplementedError("fusedopt.nn.utils: norm_type=0 is not supported for DTensors")
        device = tensors[0].device
        counts = [torch.ops.fusedopt.total_norm([_sparse_values(t) if _is_sparse(t) else _dense(t)], 0.0).to(device)
                  for t in tensors if t.numel()]
        # (not _combine: a single tensor's count of nonzero elements is not its 0-"norm" here, 1 or 0 is)
        total = torch.linalg.vector_norm(torch.stack(counts), 0.0) if counts else torch.zeros((), device=device)
    elif n_dtensors:
        total = _dtensor_total_norm(tensors, norm_type)
    elif all_dense and one_device and not n_sparse:  # the common case: one fused call, no per-tensor Python
        total = torch.ops.fusedopt.total_norm(tensors, norm_type)
    else:
        total = _combine(_local_norms(tensors, norm_type, n_sparse), norm_type, tensors[0].device)
    if error_if_nonfinite and torch.logical_or(total.isnan(), total.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`"
        )
    return total


@torch.no_grad()
def clip_grads_with_norm_(
    parameters: _tensor_or_tensors,
    max_norm: float,
    total_norm: Tensor,
    foreach: bool | None = None,
) -> None:
    r"""Scale the gradients of ``parameters`` by ``min(max_norm / (total_norm + 1e-6), 1)``, computed on
    the device, in place, as :func:`torch.nn.utils.clip_grads_with_norm_`. ``foreach`` is accepted
    for compatibility."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if (foreach is False and isinstance(total_norm, Tensor) and total_norm.dim() > 0 and total_norm.numel() == 1
            and all(g.dim() >= total_norm.dim() for g in grads)):
        # torch's per-grad path (foreach=False) multiplies by the coefficient with broadcasting, so a
        # one-element total_norm works there as a 0-dim one would (its foreach path refuses it).
        total_norm = total_norm.reshape(())
    _clip_grads(grads, float(max_norm), total_norm)


def _check_total_norm(total_norm) -> None:
    """What torch's clip_grads_with_norm_ refuses in total_norm, in its order: it computes
    clamp(max_norm / (total_norm + 1e-6), max=1) (a TypeError unless total_norm is a tensor; clamp
    refuses complex values) and multiplies the grads by it with _foreach_mul_, which takes a 0-dim
    tensor only (also a 1-element one is an error there)."""
    if not isinstance(total_norm, Tensor):
        raise TypeError(f"clip_grads_with_norm_: total_norm must be a Tensor, got {type(total_norm).__name__}")
    if total_norm.is_complex():
        raise NotImplementedError("clamp is not supported for complex types")
    if total_norm.dim() != 0:
        raise RuntimeError(f"scalar tensor expected to be 0 dim but it has {total_norm.dim()} dimensions and "
                           f"{total_norm.numel()} elements.")


def _clip_grads(grads: list, max_norm: float, total_norm: Tensor,
                survey: tuple[int, bool, bool, int] | None = None) -> None:
    if len(grads) == 0:
        return
    _check_total_norm(total_norm)
    n_dtensors, all_dense, one_device, n_sparse = survey or _survey(grads, "grads")
    dtensor = _dtensor_type() if n_dtensors or type(total_norm) is not Tensor else None
    if dtensor is not None:
        if n_dtensors:
            grads = [g._local_tensor if isinstance(g, dtensor) else g for g in grads]
        if isinstance(total_norm, dtensor):
            total_norm = total_norm.full_tensor()
    if total_norm.dtype not in (torch.float32, torch.float64):
        total_norm = total_norm.float()
    if all_dense and one_device and not n_dtensors and not n_sparse:  # the common case: one fused call
        torch.ops.fusedopt.clip_by_total_norm_(grads, to_device(total_norm, grads[0].device),
                                               max_norm)
        return
    by_device: dict[torch.device, list[Tensor]] = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g)
        # torch's in-place mul_ refuses a grad whose elements share memory (an expanded one); refused here
        # before any grad is scaled, where torch, going through the list in order, has scaled none either.
        if not _is_sparse(g) and not _fills_memory(g) and torch._debug_has_internal_overlap(g) == 1:
            raise RuntimeError("unsupported operation: more than one element of the written-to tensor refers to a "
                               "single memory location. Please clone() the tensor before performing the operation.")
    dense_by_device = {device: [g for g in device_grads if not _is_sparse(g) and _fills_memory(g)]
                       for device, device_grads in by_device.items()}
    if len(by_device) > 1 and not torch.compiler.is_compiling():
        # One op call per device, each checking its own list: a grad listed twice on a later device
        # must be refused before the first device's grads are scaled, so every list gets the op's
        # checks first. (Not traced: dynamo cannot enter _C; a compiled multi-device clip still
        # refuses, in the later device's op call.)
        for dense in dense_by_device.values():
            _C.check_clip_tensors(dense)
    for device, device_grads in by_device.items():
        norm = to_device(total_norm, device)
        dense = dense_by_device[device]
        torch.ops.fusedopt.clip_by_total_norm_(dense, norm, max_norm)
        if len(dense) != len(device_grads):
            # Views with gaps in their memory and sparse tensors (their values, in place, as torch
            # does; an uncoalesced one stays so): the same coefficient, by torch's own operations.
            coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
            for g in device_grads:
                if _is_sparse(g) or not _fills_memory(g):
                    g.mul_(coef)


@torch.no_grad()
def clip_grad_norm_(
    parameters: _tensor_or_tensors,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    r"""Clip the gradient norm of an iterable of parameters, as :func:`torch.nn.utils.clip_grad_norm_`:
    :func:`get_total_norm` of the grads, then :func:`clip_grads_with_norm_`. Gradients are modified in
    place; returns the total norm of the gradients before clipping (see :func:`get_total_norm`)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if is_generator and len(parameters) == 0:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    if isinstance(norm_type, str):  # "inf", which torch takes through float(); one that does not parse
        try:                        # is refused below, in torch's order
            norm_type = float(norm_type)
        except ValueError:
            pass
    if (not error_if_nonfinite and isinstance(norm_type, (int, float)) and isinstance(max_norm, (int, float))
            and norm_type != 0.0 and norm_type == norm_type and not torch.compiler.is_compiling()):
        # The common case (plain tensors with dense grads on one device) in C++, with no per-param
        # Python; None when the list is anything else, or holds an empty grad with an order whose norm
        # of an empty tensor is an error in torch (inf, negative). Not for the orders the op refuses
        # (0, NaN). The general path below takes the rest, and raises in torch's order: the params'
        # grads, norm_type, the norm's own errors, then max_norm.
        total_norm = _C.clip_grad_norm_plain(parameters, float(max_norm), float(norm_type))
        if total_norm is not None:
            return total_norm
    grads = [p.grad for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    survey = _survey(grads, "tensors") if grads else None  # one pass serves both halves
    total_norm = _total_norm(grads, norm_type, error_if_nonfinite, survey, foreach)
    _clip_grads(grads, float(max_norm), total_norm, survey)
    return total_norm


@torch.no_grad()
def clip_grad_value_(
    parameters: _tensor_or_tensors,
    clip_value: float,
    foreach: bool | None = None,
) -> None:
    r"""Clip the gradients to ``[-clip_value, clip_value]`` in place, as
    :func:`torch.nn.utils.clip_grad_value_` (whose foreach path this calls: an elementwise clamp has
    nothing to fuse). ``foreach`` is passed on. A sparse grad is an error, as in torch (its clamp has
    no sparse kernel: NotImplementedError for sparse COO, RuntimeError for CSR and the other
    compressed layouts), raised here before any grad changes (torch clamps the grads before it)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        parameters = list(parameters)
    float(clip_value)  # torch's first error, if any
    grads = [p.grad for p in parameters if p.grad is not None]
    _check_clampable(grads)
    torch.nn.utils.clip_grad_value_(parameters, clip_value, foreach=foreach)


def _check_clampable(grads: list) -> None:
    """Raise torch's exception type for the first grad that is not strided (in one C++ pass when none
    is)."""
    if torch.compiler.is_compiling():
        start = 0
    else:
        start, *_ = _C.survey_tensors(grads)  # the first entry the fused kernels cannot take, or -1
        if start < 0:
            return
    for index in range(start, len(grads)):
        layout = grads[index].layout
        if layout != torch.strided:
            exc = NotImplementedError if layout == torch.sparse_coo else RuntimeError
            raise exc(f"grads[{index}] has layout {layout}; clip_grad_value_ clamps dense (strided) "
                      "tensors only (torch's clamp has no sparse kernel)")
