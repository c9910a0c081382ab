# Two commands do everything on a fresh machine:
#   make demo   a real kernel, ipymcp loaded, a scripted MCP client session
#   make test   every test suite (kernel, compat envs, browser, external clients)
# Feature suites add themselves from mk/*.mk (TEST_TARGETS, SYSTEM_DEPS).

SHELL := /bin/bash
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip --disable-pip-version-check -q
PYTEST := $(PYTHON) -m pytest

TEST_TARGETS := lint test-kernel test-compat
SYSTEM_DEPS :=

.PHONY: demo test env bench lint clean system-deps $(TEST_TARGETS)

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PIP) install -U pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PIP) install -e ".[test]" ruff 2>&1 | grep -v '^WARNING: Location' || true
	$(PYTHON) -c "import ipymcp, mcp, jupyter_client"
	touch $@

include $(wildcard mk/*.mk)

demo: env
	$(PYTHON) notebooks/demo.py

test: system-deps $(TEST_TARGETS)
	@echo "all test suites passed: $(TEST_TARGETS)"

system-deps: $(SYSTEM_DEPS)

# The kernel-side suite: real kernels, the real mcp client over real HTTP.
test-kernel: env
	$(PYTEST) tests -m "not browser" -q -p no:cacheprovider

bench: env
	$(PYTHON) benchmarks/run.py

lint: env
	$(PYTHON) -m ruff check ipymcp tests benchmarks notebooks

clean:
	rm -rf $(VENV) .venvs build dist
