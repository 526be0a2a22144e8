# Entry points that work on a fresh machine (Python 3.10+, a C++ compiler; nvcc for the CUDA build).
#   make test        build fusedopt into .venv (CPU build of torch) and run the tests
#   make bench       build and run the benchmarks on the best device present
#   make cuda-check  build the CUDA kernels against a CUDA build of torch (.venv-cuda) and check that
#                    they compile, link, load and are registered for every op; no GPU needed
# Variables: PYTHON, TORCH_CPU, TORCH_CUDA, PYTEST_ARGS, BENCH_ARGS, and setup.py's build switches
# (FUSEDOPT_CUDA, TORCH_CUDA_ARCH_LIST, MAX_JOBS, FUSEDOPT_CPU_CAPABILITIES).

PYTHON ?= python3
TORCH_CPU ?= torch==2.13.0
TORCH_CUDA ?= torch==2.14.1
PYTEST_ARGS ?=
BENCH_ARGS ?=
CUDA_HOME ?= /usr/local/cuda

VENV := .venv
VENV_CUDA := .venv-cuda
DEV_DEPS := "setuptools>=64" wheel ninja numpy pytest

.PHONY: test bench build cuda-check clean

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade $(DEV_DEPS) $(TORCH_CPU)
	touch $@

build: $(VENV)/.deps
	$(VENV)/bin/python -m pip install -q --no-build-isolation --no-deps --force-reinstall .

# The installed package is tested (pytest's console script keeps the source tree off sys.path).
test: build
	$(VENV)/bin/pytest tests -q $(PYTEST_ARGS)

bench: build
	$(VENV)/bin/python benchmarks/run.py $(BENCH_ARGS)

$(VENV_CUDA)/.deps:
	$(PYTHON) -m venv $(VENV_CUDA)
	$(VENV_CUDA)/bin/python -m pip install -q --upgrade $(DEV_DEPS) $(TORCH_CUDA)
	touch $@

# pip's CUDA torch keeps cusparse.h & co. under site-packages/nvidia/cu13/include; setup.py adds it.
cuda-check: $(VENV_CUDA)/.deps
	CUDA_HOME=$(CUDA_HOME) FUSEDOPT_CUDA=1 TORCH_CUDA_ARCH_LIST=$${TORCH_CUDA_ARCH_LIST:-9.0} \
		$(VENV_CUDA)/bin/python -m pip install -q --no-build-isolation --no-deps --force-reinstall .
	$(VENV_CUDA)/bin/pytest tests/test_build.py -q $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info fusedopt/_build_info.py fusedopt/*.so
