"""The mcp SDK's own floor: a bare MCPServer with a no-op tool, in its own process.

Served the way ipymcp serves (uvicorn on a pre-bound IPPROTO_TCP socket, streamable HTTP, the same
bearer-token middleware), so the difference to ipymcp's execute is the kernel hop alone.
Prints the URL on stdout, then serves until killed.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

from ipymcp.server.security import BearerAuth, sdk_transport_security
from ipymcp.server.thread import bind_socket

TOKEN = sys.argv[1] if len(sys.argv) > 1 else "floor-token"


def main() -> None:
    logging.getLogger().addHandler(logging.NullHandler())
    mcp = MCPServer("sdk-floor", log_level="WARNING")

    @mcp.tool()
    async def noop() -> str:
        """Do nothing."""
        return "2"

    hosts = ["127.0.0.1:*", "localhost:*"]
    app = mcp.streamable_http_app(transport_security=sdk_transport_security())
    sock = bind_socket("127.0.0.1", 0)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    server = uvicorn.Server(uvicorn.Config(BearerAuth(app, {"token": TOKEN}, hosts, []), log_config=None, log_level="warning"))
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
