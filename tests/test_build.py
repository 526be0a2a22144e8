"""The build: its recorded facts, op registrations per backend, CPU kernel variants, and the readable
errors `import fusedopt` gives when the extension is missing or was built for another torch.

These tests need no GPU: run against a CUDA build (make cuda-check) they check that the CUDA kernels
compiled, linked, loaded and registered."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import fusedopt
from fusedopt._build_info import BUILD_INFO

PACKAGE_DIR = pathlib.Path(fusedopt.__file__).parent


def fusedopt_ops() -> list[str]:
    return sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("fusedopt::"))


def test_build_info_agrees_with_the_compiled_extension():
    compiled = fusedopt._C.build_info()
    for key in ("torch_version", "with_cuda", "cuda_arch_list", "cpu_capabilities"):
        assert compiled[key] == BUILD_INFO[key], key
    # The compiled version is the base version; a local tag (+cputorch2.13) only names torch/CUDA.
    assert compiled["version"] == BUILD_INFO["version"].split("+")[0]
    assert BUILD_INFO["torch_version"] == torch.__version__
    info = fusedopt.build_info()
    assert info["cpu_capability"] in info["cpu_capabilities"]
    assert fusedopt.__version__ == info["version"]
    if info["with_cuda"]:
        assert torch.version.cuda is not None
        cuda = fusedopt._C.cuda_version()
        # torch's own rule (cpp_extension): the CUDA major versions must match, a minor mismatch only
        # warns (nvcc 13.0 against torch 2.15's CUDA 13.2 runtime).
        assert cuda // 1000 == int(torch.version.cuda.split(".")[0]), (cuda, torch.version.cuda)
    else:
        assert fusedopt._C.cuda_version() is None


def test_every_op_has_cpu_and_fake_kernels():
    ops = fusedopt_ops()
    assert "fusedopt::sgd_" in ops
    for op in ops:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU"), op
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "Meta"), f"{op} has no fake impl"


# Mutating ops that return nothing run below autograd through a kernel of their own rather than torch's
# boxed autograd fallback (csrc/common/autograd_passthrough.cpp).
PASSTHROUGH_OPS = ["fusedopt::sgd_", "fusedopt::adam_", "fusedopt::rmsprop_", "fusedopt::adagrad_",
                   "fusedopt::clip_by_total_norm_", "fusedopt::total_norm"]


def test_optimizer_ops_skip_the_autograd_fallback():
    for op in PASSTHROUGH_OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "Autograd"), op
    # With grad mode on and params that require grad, the step is the one no_grad gives, and like
    # torch's fused optimizers it leaves version counters alone.
    results = []
    for grad_mode in (True, False):
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(5, generator=gen).requires_grad_() for _ in range(3)]
        grads = [torch.randn(5, generator=gen) for _ in params]
        bufs = [torch.randn(5, generator=gen) for _ in params]
        with torch.set_grad_enabled(grad_mode):
            torch.ops.fusedopt.sgd_(params, grads, bufs, lr=0.1, weight_decay=0.0, momentum=0.9,
                                    dampening=0.0, nesterov=False, maximize=False, is_first_step=False)
        assert all(p._version == 0 for p in params)
        assert all(p.grad_fn is None for p in params)
        results.append([p.detach().clone() for p in params] + bufs)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_total_norm_refuses_to_be_differentiated():
    leaf = torch.randn(4, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"tensors\[1\] requires grad, but the norm is not differentiable"):
        torch.ops.fusedopt.total_norm([torch.randn(3), leaf], 2.0)
    other = torch.randn(3)
    with torch.no_grad():
        norm = torch.ops.fusedopt.total_norm([other, leaf], 2.0)
    assert not norm.requires_grad
    torch.testing.assert_close(norm, torch.linalg.vector_norm(torch.cat([other, leaf.detach()])))


def test_every_cpu_op_has_a_cuda_kernel_when_built_with_cuda():
    if not BUILD_INFO["with_cuda"]:
        pytest.skip("CPU-only build (make cuda-check runs this against the CUDA build)")
    missing = [op for op in fusedopt_ops()
               if torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU")
               and not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")]
    assert not missing, f"ops with a CPU kernel but no CUDA kernel: {missing}"


def _import_in_subprocess(path: pathlib.Path, env_extra=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(path), **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", "import fusedopt"], capture_output=True, text=True,
                          env=env, cwd=path)


def _copy_package(tmp_path: pathlib.Path) -> pathlib.Path:
    dst = tmp_path / "fusedopt"
    shutil.copytree(PACKAGE_DIR, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_import_without_the_extension_says_so(tmp_path):
    pkg = _copy_package(tmp_path)
    for so in pkg.glob("_C*.so"):
        so.unlink()
    proc = _import_in_subprocess(tmp_path)
    assert proc.returncode != 0
    assert "compiled extension fusedopt._C is missing" in proc.stderr, proc.stderr


def test_import_of_an_unbuilt_source_tree_says_so(tmp_path):
    pkg = _copy_package(tmp_path)
    (pkg / "_build_info.py").unlink()
    for so in pkg.glob("_C*.so"):
        so.unlink()
    proc = _import_in_subprocess(tmp_path)
    assert proc.returncode != 0
    assert "was never built" in proc.stderr, proc.stderr


def test_import_against_another_torch_says_which(tmp_path):
    pkg = _copy_package(tmp_path)
    info = dict(BUILD_INFO, torch_version="1.13.1+cu117")
    (pkg / "_build_info.py").write_text(f"BUILD_INFO = {info!r}\n")
    proc = _import_in_subprocess(tmp_path)
    assert proc.returncode != 0
    assert "was built against torch 1.13.1+cu117" in proc.stderr, proc.stderr
    assert f"torch {torch.__version__} is installed" in proc.stderr


def test_import_of_a_cuda_build_with_cpu_torch_says_so(tmp_path):
    if torch.version.cuda is not None:
        pytest.skip("needs a CPU build of torch")
    pkg = _copy_package(tmp_path)
    info = dict(BUILD_INFO, with_cuda=True, torch_cuda_version="13.0")
    (pkg / "_build_info.py").write_text(f"BUILD_INFO = {info!r}\n")
    proc = _import_in_subprocess(tmp_path)
    assert "CPU-only build" in proc.stderr, proc.stderr


_SGD_PROBE = textwrap.dedent("""
    import torch, fusedopt
    g = torch.Generator().manual_seed(0)
    p = torch.randn(1001, generator=g)
    opt = fusedopt.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    for _ in range(5):
        p.grad = torch.randn(1001, generator=g)
        opt.step()
    print(fusedopt.cpu_capability())
    print(repr(p.sum().item()), repr(p.abs().max().item()))
""")


@pytest.mark.parametrize("capability", BUILD_INFO["cpu_capabilities"])
def test_every_cpu_variant_runs_and_agrees(capability):
    """ATEN_CPU_CAPABILITY selects each compiled variant; all compute the same update."""
    torch_best = torch.backends.cpu.get_cpu_capability()
    order = ["DEFAULT", "AVX2", "AVX512"]
    if torch_best in order and order.index(capability) > order.index(torch_best):
        pytest.skip(f"this CPU runs at most {torch_best}")
    runs = {}
    for cap in {capability, "DEFAULT"}:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap.lower())
        proc = subprocess.run([sys.executable, "-c", _SGD_PROBE], capture_output=True, text=True,
                              env=env, cwd="/")
        assert proc.returncode == 0, proc.stderr
        name, values = proc.stdout.split("\n")[:2]
        assert name == cap
        runs[cap] = [float(v) for v in values.split()]
    assert runs[capability] == pytest.approx(runs["DEFAULT"], rel=1e-5)
