# The JupyterLab / Notebook 7 extension (js/) and its browser tests (real Lab + Notebook 7 in
# headless Debian chromium, driven by Python Playwright; no Playwright browser download).
CHROMIUM ?= /usr/bin/chromium
JLPM := PATH=$(abspath $(VENV))/bin:$$PATH jlpm

TEST_TARGETS += test-browser
SYSTEM_DEPS += install-chromium

.PHONY: install-chromium js test-browser

install-chromium:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }
	@$(CHROMIUM) --version

# Rebuild the labextension after editing js/src (pip install -e . only builds it when missing).
js: env
	cd js && $(JLPM) install && $(JLPM) build:prod
	$(PIP) install --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true

# The k6 environment (ipykernel 6.29) is one of the kernels the browser suite opens notebooks with.
test-browser: env install-chromium .venvs/k6/.installed
	CHROMIUM=$(CHROMIUM) $(PYTEST) tests/browser -m browser -q -p no:cacheprovider
