"""Loading of the compiled extension ``fusedopt._C``, with readable errors when it cannot work.

The build facts (fusedopt/_build_info.py, written by setup.py) are read before the extension is
loaded, so a torch mismatch is reported as such instead of as an undefined-symbol error.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import torch

_REBUILD = (
    "Rebuild fusedopt against the installed torch from a checkout: "
    "pip install --no-build-isolation --force-reinstall --no-deps .  (see README.md)"
)

_module: ModuleType | None = None


def _read_build_info() -> dict:
    try:
        from ._build_info import BUILD_INFO
    except ImportError:
        raise ImportError(
            "fusedopt's compiled extension is missing: this copy of the package was never built "
            "(fusedopt/_build_info.py and fusedopt/_C*.so are made by the build). Install it with "
            "pip install --no-build-isolation .  from a checkout, or import fusedopt from an "
            "installed copy rather than from the source tree."
        ) from None
    return dict(BUILD_INFO)


def _torch_minor(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def _check_torch(info: dict) -> None:
    built, running = info["torch_version"], torch.__version__
    if _torch_minor(built) != _torch_minor(running):
        raise ImportError(
            f"fusedopt {info['version']} was built against torch {built}, but torch {running} is "
            f"installed; a compiled extension only works with the torch minor version it was built "
            f"for. Install torch {'.'.join(map(str, _torch_minor(built)))}.x, or: {_REBUILD}"
        )
    if info["with_cuda"] and torch.version.cuda is None:
        raise ImportError(
            f"fusedopt {info['version']} contains CUDA kernels built against torch {built} (CUDA "
            f"{info['torch_cuda_version']}), but the installed torch {running} is a CPU-only build. "
            f"Install a CUDA build of torch, or: {_REBUILD}"
        )


def load_extension() -> ModuleType:
    global _module
    if _module is not None:
        return _module
    info = _read_build_info()
    _check_torch(info)
    try:
        _module = importlib.import_module("fusedopt._C")
    except ImportError as e:
        if "fusedopt._C" in str(e) or "No module named" in str(e):
            package_dir = os.path.dirname(os.path.abspath(__file__))
            if os.path.exists(os.path.join(package_dir, "..", "setup.py")):
                raise ImportError(
                    f"fusedopt was imported from its source tree ({package_dir}), which holds no "
                    f"compiled extension: run from another directory to use the installed copy, or "
                    f"build in place with: python setup.py build_ext --inplace"
                ) from e
            raise ImportError(
                f"fusedopt's compiled extension fusedopt._C is missing next to "
                f"fusedopt/_build_info.py ({e}). {_REBUILD}"
            ) from e
        raise ImportError(
            f"fusedopt's compiled extension failed to load: {e}. It was built against torch "
            f"{info['torch_version']} and torch {torch.__version__} is installed. {_REBUILD}"
        ) from e
    return _module


def build_info() -> dict:
    """How the installed fusedopt was built: versions, CUDA on/off and archs, CPU kernel variants."""
    info = _read_build_info()
    info["cpu_capability"] = cpu_capability()
    if _module is not None and info["with_cuda"]:
        info["cuda_compiled_version"] = _module.cuda_version()
    return info


def cpu_capability() -> str:
    """The CPU kernel variant this process uses: DEFAULT, AVX2 or AVX512 (ATEN_CPU_CAPABILITY lowers it)."""
    return load_extension().cpu_capability()
