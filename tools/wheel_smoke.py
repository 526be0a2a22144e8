"""Smoke test of an installed fusedopt wheel, run from outside the source tree in a fresh environment:
it imports, reports how it was built, and takes a few SGD steps that match torch.optim.SGD exactly.
With --expect-torch-mismatch it checks instead that a wheel built for another torch fails readably."""

import os
import sys

import torch

if "--expect-torch-mismatch" in sys.argv:
    # A wheel built for another torch minor version must fail to import with the readable message,
    # not with an undefined-symbol error from the dynamic loader.
    try:
        import fusedopt  # noqa: F401
    except ImportError as e:
        assert "was built against torch" in str(e), f"unexpected import error: {e}"
        print(f"readable error as expected: {e}")
        sys.exit(0)
    sys.exit(f"fusedopt imported against torch {torch.__version__}, expected a version-mismatch error")

import fusedopt  # noqa: E402

here = os.path.dirname(os.path.abspath(fusedopt.__file__))
assert not os.path.exists(os.path.join(os.path.dirname(here), "setup.py")), \
    f"fusedopt imported from a source tree ({here}), not from an installed wheel"
info = fusedopt.build_info()
print(f"fusedopt {fusedopt.__version__} from {here}: {info}")
expected_cuda = os.environ.get("EXPECT_CUDA_KERNELS")
if expected_cuda is not None and info["with_cuda"] != (expected_cuda == "1"):
    sys.exit(f"with_cuda is {info['with_cuda']}, expected {expected_cuda == '1'}")

torch.manual_seed(0)
params = [torch.randn(n) for n in (3, 1000, 70001)]
ref = [p.clone() for p in params]
ours = fusedopt.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
theirs = torch.optim.SGD(ref, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, foreach=False)
for _ in range(5):
    for p, q in zip(params, ref):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    ours.step()
    theirs.step()
for p, q in zip(params, ref):
    torch.testing.assert_close(p, q, rtol=0, atol=0)
print("smoke test passed: 5 SGD steps equal to torch.optim.SGD")
