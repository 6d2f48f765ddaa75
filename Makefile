# mn-chainer: the two commands of the README.
#   make        set up .venv (Python 3.10, pinned stack) and run the main job
#   make test   set up the same .venv and run the whole test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DATA ?= $(firstword $(wildcard ../shared/data/cifar10.npz))
PYTEST_ARGS ?=

.PHONY: all demo test test-gpu bench clean

all: demo

$(VENV)/.installed: setup.py requirements.txt requirements-test.txt \
		mn_chainer/_cpu_kernels.c mn_chainer/_cpu_kernels_impl.h \
		mn_chainer/_transform_kernels_impl.h mn_chainer/_thread_team.h
	test -x $(PY) || "$$(tools/find_python310.sh)" -m venv $(VENV)
	$(PIP) install "setuptools<70" wheel "numpy<2"
	$(PIP) install --no-build-isolation -r requirements.txt -r requirements-test.txt
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

# The main job: a short BN-2 vs MN-2 comparison on CIFAR-10 (see README).
# --resume: a second `make` continues (or just prints) the demo in
# result/demo instead of refusing to write over it.
demo: $(VENV)/.installed
	$(PY) -m mn_chainer.demo --resume $(if $(DATA),--data $(DATA))

# Open MPI and mpi4py for the ChainerMN (multi-node) tests; where they
# cannot be installed (no root or no apt-get), those tests skip.
$(VENV)/.mpi: $(VENV)/.installed
	@command -v mpiexec >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null; \
	  else echo "warning: mpiexec not found and cannot install Open MPI here: multi-node tests will skip" >&2; fi; }
	$(PIP) install mpi4py==4.1.2 || echo "warning: mpi4py did not install: multi-node tests will skip" >&2
	touch $@

# MN_CHAINER_REQUIRE_CPU_KERNELS: a C extension that did not build (it is
# optional for users) fails the tests here instead of skipping them.
test: $(VENV)/.installed $(VENV)/.mpi
	MN_CHAINER_REQUIRE_CPU_KERNELS=1 $(PY) -m pytest -q tests $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_gmm.py
	$(PY) benchmarks/bench_layer.py

clean:
	rm -rf $(VENV) *.egg-info build mn_chainer/_cpu_kernels*.so
