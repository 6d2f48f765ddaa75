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

$(VENV)/.installed: setup.py requirements.txt requirements-test.txt
	test -x $(PY) || "$$(tools/find_python310.sh)" -m venv $(VENV)
	$(PIP) install "setuptools<70" wheel "numpy<2"
	$(PIP) install --no-build-isolation -r requirements.txt -r requirements-test.txt
	$(PIP) install --no-build-isolation --no-deps -e .
	touch $@

# The main job: a short BN-2 vs MN-2 comparison on CIFAR-10 (see README).
demo: $(VENV)/.installed
	$(PY) -m mn_chainer.demo $(if $(DATA),--data $(DATA))

test: $(VENV)/.installed
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_gmm.py
	$(PY) benchmarks/bench_layer.py

clean:
	rm -rf $(VENV) *.egg-info
