"""The ``step()`` every fusedopt optimizer shares; each optimizer supplies only what differs: which
state keys it keeps, how it creates missing state, and the launch of its op (``_run``)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from . import _clipping, _common, _step_state


class FusedStep:
    """Mixin placed before the torch optimizer class: ``class SGD(FusedStep, torch.optim.SGD)``.

    A step checks every param group before anything is modified (``_common.collect``; step counts by
    ``_step_state.check``), then per group: repairs layouts, creates missing state (``_prepare``) and
    calls ``_run`` once per device with the grad scale (GradScaler's scale, or with ``max_grad_norm``
    the pair [scale or 1, clip coefficient], ``_clipping``) and GradScaler's ``found_inf``. The kernels
    store the unscaled grads only under GradScaler (unscaled, and clipped with ``max_grad_norm``, as
    torch's ``unscale_``/``clip_grad_norm_``/fused step leave them); folded clipping alone leaves the
    grads as they were, so the step reads them once more and writes them never.
    """

    _NAME: str  # "fusedopt.optim.<Class>", used in messages
    # GradScaler hands grad_scale/found_inf to step() instead of unscaling and syncing itself. A class
    # attribute, so copies and unpickled optimizers keep it too.
    _step_supports_amp_scaling = True

    # fusedopt's own options, kept as attributes (state_dict keeps torch's layout), with the values that
    # pickles made before they were kept get. torch's __getstate__ keeps defaults, state and param_groups
    # only: without these, a copy (copy.deepcopy, pickling) would silently stop clipping.
    _KEPT_ATTRIBUTES = {"max_grad_norm": None, "grad_norm_type": 2.0}

    def __getstate__(self):
        state = super().__getstate__()
        state.update({name: getattr(self, name) for name in self._KEPT_ATTRIBUTES})
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        for name, default in self._KEPT_ATTRIBUTES.items():
            self.__dict__.setdefault(name, default)
        self.__dict__.setdefault("last_grad_norm", None)

    def load_state_dict(self, state_dict) -> None:
        """torch's load_state_dict, then fusedopt's fix-ups of the loaded state (``_fix_loaded_state``),
        then the user's load_state_dict post-hooks: they see the state as ``step()`` will, as torch's
        post-hooks see it after torch's own casts."""
        post_hooks = self._optimizer_load_state_dict_post_hooks
        self._optimizer_load_state_dict_post_hooks = type(post_hooks)()
        try:
            super().load_state_dict(state_dict)
        finally:
            # The same dict object: the handles that remove hooks hold a reference to it.
            self._optimizer_load_state_dict_post_hooks = post_hooks
        self._fix_loaded_state(state_dict)
        for post_hook in post_hooks.values():
            post_hook(self)

    def _fix_loaded_state(self, state_dict) -> None:
        # torch 2.14's SGD saves Partial momentum buffers under sequence parallelism; step() needs
        # state placed like its param (every rank loads, so the all-reduces match).
        _common.reduce_partial_state(self)

    def add_param_group(self, param_group: dict) -> None:
        """torch's add_param_group, except that a param listed twice in a group is an error (torch
        warns that it will be one, and steps such a param twice in a row). The fused kernel updates
        a group's params in parallel, so a duplicate would be updated twice at once."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="optimizer contains a parameter group with duplicate")
            super().add_param_group(param_group)
        params = self.param_groups[-1]["params"]
        if len(set(params)) != len(params):
            self.param_groups.pop()
            seen: set = set()
            for index, p in enumerate(params):
                if p in seen:
                    break
                seen.add(p)
            raise ValueError(f"{self._NAME}: param {index} of the new param group appears earlier in the "
                             "same group; every parameter must appear once (torch.optim warns that this "
                             "will be an error)")

    def _collect_keys(self, group: dict) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(state keys to collect, those of them that are per-param scalars such as 'step')."""
        raise NotImplementedError

    def _required_state_keys(self, group: dict) -> tuple[str, ...]:
        """State keys that every param with a step count has (made on its first step whatever the
        options): one missing beside a step count means a corrupt or foreign checkpoint."""
        return ()

    def _skip_needs_sync(self, collected: list) -> bool:
        """Whether a step that GradScaler skips would still create state (a first step that derives
        state from the grads): then found_inf is read on the host once and the step returns early."""
        return False

    def _state_dtype(self, p: Tensor) -> torch.dtype:
        """The dtype the optimizer keeps p's (non-scalar) state in."""
        return p.dtype

    def _prepare(self, group: dict, c):
        """Create the group's missing state; the return value is passed to _run."""
        return None

    def _run(self, group: dict, part, prepared, grad_scale: Tensor | None, found_inf: Tensor | None,
             write_grads: bool) -> None:
        """Launch the op on one device's part of the group. ``write_grads``: whether the kernel stores
        the grads it divided by ``grad_scale`` (only GradScaler's unscaling is written back)."""
        raise NotImplementedError

    # torch.compile'd callers (PyTorch's compiled-optimizer recipe, a compiled training step) run the step
    # as it is: it is one fused op per group already, and dynamo cannot trace the C++ that collects the
    # group, so tracing it would only add graph breaks, warnings and guards on every call.
    @torch._disable_dynamo
    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # Everything is checked before anything is modified.
        collected = []
        for i, group in enumerate(self.param_groups):
            if group["differentiable"]:
                raise RuntimeError(f"{self._NAME} does not support differentiable=True; use "
                                   f"torch.optim.{self._NAME.rsplit('.', 1)[1]}")
            keys, scalar_keys = self._collect_keys(group)
            c = _common.collect(self, self._NAME, i, keys, scalar_keys=scalar_keys)
            _common.check_required_state(c, self._required_state_keys(group), self._NAME, i)
            if len(c):
                step_fixes = _step_state.check(c, self._NAME, i) if "step" in scalar_keys else []
                collected.append((group, c, step_fixes))
        _common.reduce_partial_grads(collected)
        grad_scale, found_inf = _common.grad_scaler_tensors(self)
        # With max_grad_norm: unscale and clip in the update kernels, one factor pair per device. Computed
        # before a skip too, so that last_grad_norm is this step's (inf/nan) on every skipped step.
        scales = _clipping.step_grad_scales(self, collected, grad_scale)
        if found_inf is not None and self._skip_needs_sync(collected) and found_inf.item() != 0:
            return loss

        write_grads = grad_scale is not None
        moved: dict = {}
        for group, c, step_fixes in collected:
            replaced = _common.repair_layouts(c, self.state, self._state_dtype)
            _step_state.repair(c, self.state, step_fixes)
            prepared = self._prepare(group, c)
            for part in c.by_device():
                device = part.device
                scale = scales[device] if scales is not None else _common.on_device(grad_scale, device, moved)
                inf = _common.on_device(found_inf, device, moved)
                self._run(group, part, prepared, scale, inf, write_grads)
            if write_grads:
                _common.write_back_grads(c, replaced)
        return loss
