"""torch.fx leaves for fusedopt's modules.

torch.fx.symbolic_trace keeps torch.nn's modules as leaves: one call_module node whose forward runs when
the graph runs, so train/eval switches and input checks still apply. It traces into any other module,
and our forwards' input checks and mode branches cannot run on Proxies. So each of our modules'
forward is `call_forward(self, input)`, a function FX records as one node (torch.fx.wrap) on the module
itself; the traced graph then calls the module's `_fused_forward` at run time, as a leaf's would be.
Callers look it up on this module (`_fx.call_forward`), where FX patches it while tracing."""

from __future__ import annotations

import torch.fx


def call_forward(module, input):
    return module._fused_forward(input)


torch.fx.wrap("call_forward")
