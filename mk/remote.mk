# Remote kernels through a real JupyterHub (tests/test_jupyterhub.py). The hub is a test
# dependency (pyproject.toml, in the main venv: its single-user servers run from there, so they
# load ipymcp's server extension); its proxy, configurable-http-proxy, comes from npm into a
# project-local .tools/hub. The proxy wants Node >= 20: the test runs it with .tools/node's Node 22
# (mk/clients.mk) when present, else `node`.
HUB_TOOLS := .tools/hub
HUB_NPM_PINS := configurable-http-proxy@5.3.0

# A system dependency, so `make test-kernel` (pytest tests) runs the hub test too. Under
# `make test` (CI) the test must run: IPYMCP_REQUIRE_HUB turns its skip (proxy missing) into a
# failure. `make test-remote` runs only the remote-kernel suites.
SYSTEM_DEPS += install-hub-tools
test: export IPYMCP_REQUIRE_HUB := 1

.PHONY: install-hub-tools test-remote

install-hub-tools: $(HUB_TOOLS)/.installed

$(HUB_TOOLS)/.installed: mk/remote.mk
	@command -v npm >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null); }
	mkdir -p $(HUB_TOOLS)
	test -f $(HUB_TOOLS)/package.json || echo '{"private": true}' > $(HUB_TOOLS)/package.json
	npm install --prefix $(HUB_TOOLS) --no-audit --no-fund --loglevel=error $(HUB_NPM_PINS)
	test -f $(HUB_TOOLS)/node_modules/configurable-http-proxy/bin/configurable-http-proxy
	touch $@

test-remote: env install-hub-tools
	$(PYTEST) tests/test_jupyterhub.py tests/test_tunnel.py tests/test_tunnel_tabs.py tests/test_serverext.py \
	  tests/attacks/test_jupyter_tunnel.py -q -p no:cacheprovider
