# The JupyterLab / Notebook 7 extension (js/) and its browser tests (real Lab + Notebook 7 in
# headless Debian chromium, driven by Python Playwright; no Playwright browser download).
CHROMIUM ?= /usr/bin/chromium
JLPM := PATH=$(abspath $(VENV))/bin:$$PATH jlpm

TEST_TARGETS += test-js test-browser
SYSTEM_DEPS += install-chromium

.PHONY: install-chromium js test-js test-browser

install-chromium:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }
	@$(CHROMIUM) --version

# Rebuild the labextension after editing js/src (pip install -e . only builds it when missing).
js: env
	cd js && $(JLPM) install && $(JLPM) build:prod
	$(PIP) install --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true

# The extension's pure parts (protocol parsing, replies, text helpers) in node, no browser: seconds.
test-js: env
	cd js && $(JLPM) install && $(JLPM) test

# The k6 environment (ipykernel 6.29) is one of the kernels the browser suite opens notebooks with.
test-browser: env install-chromium .venvs/k6/.installed
	CHROMIUM=$(CHROMIUM) $(PYTEST) tests/browser -m browser -q -p no:cacheprovider

# jupyter-collaboration turns on real-time collaboration for every notebook of the JupyterLab it is
# installed in, so it gets a venv of its own: only the collaboration browser tests start their
# server from it (tests/browser/test_collaboration_browser.py); the other suites keep .venv's plain
# JupyterLab, at the same version. Its ipymcp labextension is a link to the built one (make js).
RTC_VENV := .venvs/rtc

$(RTC_VENV)/.installed: pyproject.toml | $(VENV)/.installed
	rm -rf $(RTC_VENV)
	$(PY) -m venv $(RTC_VENV)
	$(RTC_VENV)/bin/python -m pip --disable-pip-version-check -q install \
	  "jupyterlab==$$($(PYTHON) -c 'import jupyterlab; print(jupyterlab.__version__)')" \
	  "jupyter-collaboration>=5,<6" -e . 2>&1 | grep -v '^WARNING: Location' || true
	rm -rf $(RTC_VENV)/share/jupyter/labextensions/ipymcp
	ln -s $(abspath ipymcp/labextension) $(RTC_VENV)/share/jupyter/labextensions/ipymcp
	$(RTC_VENV)/bin/python -c "import jupyter_server_ydoc, ipymcp, jupyterlab; print('rtc', jupyterlab.__version__)"
	touch $@

test-browser: $(RTC_VENV)/.installed
