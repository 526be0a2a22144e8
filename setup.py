"""Build of fusedopt and its one compiled extension, ``fusedopt._C``.

Every build switch is an environment variable read in ``BuildConfig.from_env`` below, nowhere else:

  FUSEDOPT_CUDA              auto (default) | 0 | 1. auto builds the CUDA kernels whenever torch is a
                             CUDA build and nvcc is found, whether or not a GPU is visible; 1 makes a
                             missing toolchain an error; 0 builds the CPU kernels only.
  TORCH_CUDA_ARCH_LIST       CUDA architectures (default below: sm_80 to sm_120, PTX for the newest).
  MAX_JOBS                   parallel compile jobs (default: all cores).
  FUSEDOPT_CPU_CAPABILITIES  CPU kernel variants to compile, comma separated, from DEFAULT, AVX2,
                             AVX512 (default: all that the target architecture has). DEFAULT is
                             always built; the fastest one the running CPU supports is chosen at run
                             time (ATEN_CPU_CAPABILITY lowers it, as it does for torch's kernels).
  FUSEDOPT_DEBUG             1 compiles with -O0 -g (host) and -G (device).
  FUSEDOPT_LOCAL_VERSION     1 appends +cu<ver>torch<maj.min> (or +cputorch<maj.min>) to the version.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import sys
from dataclasses import dataclass, field

import torch
from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = "0.1.0"
DEFAULT_CUDA_ARCHS = "8.0;8.6;8.9;9.0;10.0;12.0+PTX"

# Flags per CPU kernel variant. The kernels under csrc/cpu/kernels are compiled once per variant into
# namespace fusedopt::cpu::<VARIANT> (the same scheme as ATen's CPU_CAPABILITY), and csrc/cpu/dispatch.h
# picks one at run time.
CPU_CAPABILITY_FLAGS = {
    "DEFAULT": [],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
               "-mbmi", "-mbmi2"],
}


def _torch_minor() -> str:
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


@dataclass
class BuildConfig:
    with_cuda: bool
    cuda_reason: str
    cpu_capabilities: list[str]
    debug: bool
    local_version: bool
    cuda_arch_list: str = ""
    extra_include_dirs: list[str] = field(default_factory=list)

    @staticmethod
    def from_env() -> "BuildConfig":
        mode = os.environ.get("FUSEDOPT_CUDA", "auto").strip().lower()
        if mode not in ("auto", "0", "1"):
            sys.exit(f"FUSEDOPT_CUDA must be auto, 0 or 1, not {mode!r}")
        have_toolchain, reason = _cuda_toolchain()
        if mode == "1" and not have_toolchain:
            sys.exit(f"FUSEDOPT_CUDA=1 but the CUDA kernels cannot be built: {reason}")
        with_cuda = have_toolchain and mode != "0"
        if mode == "0":
            reason = "disabled by FUSEDOPT_CUDA=0"

        machine = platform.machine().lower()
        available = ["DEFAULT", "AVX2", "AVX512"] if machine in ("x86_64", "amd64") else ["DEFAULT"]
        requested = os.environ.get("FUSEDOPT_CPU_CAPABILITIES")
        if requested:
            caps = [c.strip().upper() for c in requested.split(",") if c.strip()]
            unknown = [c for c in caps if c not in available]
            if unknown:
                sys.exit(f"FUSEDOPT_CPU_CAPABILITIES: {unknown} not available on {machine}; "
                         f"choose from {available}")
            caps = ["DEFAULT"] + [c for c in caps if c != "DEFAULT"]
        else:
            caps = available

        os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
        config = BuildConfig(
            with_cuda=with_cuda,
            cuda_reason=reason,
            cpu_capabilities=caps,
            debug=os.environ.get("FUSEDOPT_DEBUG", "0") == "1",
            local_version=os.environ.get("FUSEDOPT_LOCAL_VERSION", "0") == "1",
        )
        if with_cuda:
            # cpp_extension reads TORCH_CUDA_ARCH_LIST itself; without it, it would build for the GPUs
            # it sees, which on a GPU-less build machine means a guess.
            config.cuda_arch_list = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
            # pip's CUDA builds of torch ship the CUDA library headers (cusparse.h, ...) that torch's
            # headers include, in site-packages/nvidia/cu<major>/include; a bare nvcc install lacks them.
            # That folder also holds the CUDA runtime headers of torch's CUDA minor version (13.2 for
            # torch 2.15), which must not shadow nvcc's own (CCCL stops with "CUDA compiler and CUDA
            # toolkit headers are incompatible"): it is searched after every -I folder (-isystem).
            major = torch.version.cuda.split(".")[0]
            for site in sys.path:
                candidate = os.path.join(site, "nvidia", f"cu{major}", "include")
                if os.path.isdir(candidate):
                    config.extra_include_dirs.append(candidate)
                    break
        return config

    @property
    def version(self) -> str:
        if not self.local_version:
            return VERSION
        if self.with_cuda:
            return f"{VERSION}+cu{torch.version.cuda.replace('.', '')}torch{_torch_minor()}"
        return f"{VERSION}+cputorch{_torch_minor()}"


def _cuda_toolchain() -> tuple[bool, str]:
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is not a CUDA build"
    if cpp_extension.CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    nvcc = os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc")
    if not os.path.exists(nvcc):
        return False, f"nvcc not found at {nvcc}"
    return True, f"nvcc at {nvcc}"


CONFIG = BuildConfig.from_env()


def _write_build_info() -> dict:
    """Build facts that travel with the package; fusedopt/__init__.py checks them before loading _C."""
    info = {
        "version": CONFIG.version,
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "with_cuda": CONFIG.with_cuda,
        "cuda_arch_list": CONFIG.cuda_arch_list if CONFIG.with_cuda else "",
        "cpu_capabilities": CONFIG.cpu_capabilities,
        "debug": CONFIG.debug,
    }
    with open(os.path.join(ROOT, "fusedopt", "_build_info.py"), "w") as f:
        f.write("# Generated by setup.py at build time; do not edit.\n")
        f.write(f"BUILD_INFO = {info!r}\n")
    return info


def _c_string(name: str, value: str) -> str:
    return f'-D{name}="{value}"'


def _extension() -> cpp_extension.CppExtension:
    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))
    # Every .cpp under csrc/ except the per-variant CPU kernels, which BuildExtension compiles itself.
    kernels_dir = os.path.join("csrc", "cpu", "kernels") + os.sep
    sources = [s for s in rel("csrc/**/*.cpp") if not s.startswith(kernels_dir)]
    opt = ["-O0", "-g"] if CONFIG.debug else ["-O3"]
    defines = [
        # The base version only: the local tag (+cu130torch2.14) names the torch and CUDA versions,
        # which are compiled in and checked separately, and must not force a rebuild.
        _c_string("FUSEDOPT_VERSION", VERSION),
        _c_string("FUSEDOPT_TORCH_VERSION", torch.__version__),
        _c_string("FUSEDOPT_CUDA_ARCH_LIST", CONFIG.cuda_arch_list),
    ] + [f"-DFUSEDOPT_CPU_HAVE_{cap}" for cap in CONFIG.cpu_capabilities]
    # -fopenmp: at::parallel_for is an inline OpenMP region; without the flag it silently runs serially.
    # The extension then links libgomp.so.1, the soname torch itself loads, so both share one pool.
    cxx = opt + ["-fopenmp", "-Wall", "-Wno-unused-function", "-Wno-unknown-pragmas"] + defines
    kwargs = dict(
        name="fusedopt._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )
    if not CONFIG.with_cuda:
        return cpp_extension.CppExtension(**kwargs)
    kwargs["sources"] += rel("csrc/**/*.cu")
    after_toolkit = [flag for d in CONFIG.extra_include_dirs for flag in ("-isystem", d)]
    kwargs["extra_compile_args"]["cxx"] += ["-DFUSEDOPT_WITH_CUDA"] + after_toolkit
    kwargs["extra_compile_args"]["nvcc"] = (["-O0", "-G"] if CONFIG.debug else ["-O3"]) + [
        "-lineinfo", "-DFUSEDOPT_WITH_CUDA", "--expt-relaxed-constexpr"] + defines + after_toolkit
    return cpp_extension.CUDAExtension(**kwargs)


def _check_unique_basenames(sources: list[str]) -> None:
    # ninja names objects after the source's stem: adam.cpp and adam.cu would overwrite each other.
    seen: dict[str, str] = {}
    for s in sources:
        stem = os.path.splitext(os.path.basename(s))[0]
        if stem in seen:
            sys.exit(f"source basenames must be unique: {seen[stem]} and {s}")
        seen[stem] = s


class BuildExtension(cpp_extension.BuildExtension):
    """torch's BuildExtension, plus the per-capability CPU kernel objects."""

    def build_extension(self, ext):
        kernel_sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "cpu", "kernels", "*.cpp")))
        _check_unique_basenames(list(ext.sources) + kernel_sources)
        cxx = list(ext.extra_compile_args["cxx"])
        for cap in CONFIG.cpu_capabilities:
            # self.compiler.compile is torch's ninja wrapper here, so these compile in parallel too;
            # each capability gets its own output folder, hence its own objects.
            objects = self.compiler.compile(
                kernel_sources,
                output_dir=os.path.join(self.build_temp, f"cpu_{cap.lower()}"),
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": cxx + CPU_CAPABILITY_FLAGS[cap]
                                + [f"-DCPU_CAPABILITY={cap}", f"-DCPU_CAPABILITY_{cap}"]},
            )
            ext.extra_objects.extend(objects)
        super().build_extension(ext)


def _install_requires() -> list[str]:
    # The extension is bound to the torch minor version it was compiled against.
    minor = _torch_minor()
    major, mnr = (int(x) for x in minor.split("."))
    return [f"torch>={minor},<{major}.{mnr + 1}"]


if __name__ == "__main__":
    info = _write_build_info()
    print(f"fusedopt {info['version']}: torch {info['torch_version']}, CUDA kernels "
          f"{'on (' + CONFIG.cuda_arch_list + ')' if CONFIG.with_cuda else 'off'} [{CONFIG.cuda_reason}], "
          f"CPU variants {','.join(CONFIG.cpu_capabilities)}, MAX_JOBS={os.environ['MAX_JOBS']}")
    if shutil.which("ninja") is None and not cpp_extension.is_ninja_available():
        print("warning: ninja not found; the build will be serial and slow", file=sys.stderr)
    setup(
        name="fusedopt",
        version=CONFIG.version,
        description="Fused C++/CUDA kernels for PyTorch optimizers, BatchNorm, dropout and clipping",
        long_description=open(os.path.join(ROOT, "README.md")).read(),
        long_description_content_type="text/markdown",
        license="BSD-3-Clause",
        python_requires=">=3.10",
        packages=find_packages(include=["fusedopt", "fusedopt.*"]),
        ext_modules=[_extension()],
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        # One build folder per torch build, so CPU and CUDA builds from one checkout stay incremental.
        options={"build": {"build_base": os.path.join("build", f"torch-{torch.__version__}")}},
        install_requires=_install_requires(),
        zip_safe=False,
    )
