"""The remote client in one call: an MCP ``Client`` on a kernel's ipymcp, through its Jupyter server.

```python
endpoint = Endpoint("https://hub.example.org/user/alice/", token=os.environ["JUPYTER_TOKEN"])
async with connect_kernel(endpoint, kernel_id) as kernel:
    print(kernel.route.describe())
    result = await kernel.client.call_tool("list_variables", {})
```
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mcp import Client

from .endpoint import Endpoint
from .route import Route
from .tunnel import KernelTunnelTransport, NotLoadedError, TunnelOptions


@dataclass
class RemoteKernel:
    client: Client
    transport: KernelTunnelTransport

    @property
    def route(self) -> Route:
        assert self.transport.route is not None
        return self.transport.route


@asynccontextmanager
async def connect_kernel(
    endpoint: Endpoint, kernel_id: str, options: TunnelOptions | None = None, **client_options: Any
) -> AsyncIterator[RemoteKernel]:
    """An initialized MCP client session with ipymcp in ``kernel_id``; ``client_options`` go to
    the SDK's ``Client`` (``mode``, ``elicitation_callback``, ``client_info``…)."""
    transport = KernelTunnelTransport(endpoint, kernel_id, options)
    async with Client(transport, **client_options) as client:
        yield RemoteKernel(client, transport)


@dataclass
class Probe:
    """Whether ipymcp answers in a kernel, and how a tunnel would reach it."""

    loaded: bool
    detail: str  # the route, or why not
    answers_while_busy: bool = False
    answered: bool = True  # False: no answer (busy old kernel, network, refused), so unknown
    server_info: dict[str, Any] | None = None  # the kernel's ready message (version, pid…)


async def probe_kernel(endpoint: Endpoint, kernel_id: str, options: TunnelOptions | None = None) -> Probe:
    """Open an ``ipymcp.mcp`` comm with a deadline and close it again (one short kernel request)."""
    transport = KernelTunnelTransport(endpoint, kernel_id, options)
    try:
        await transport.open()
    except NotLoadedError as exc:
        return Probe(False, str(exc))
    except (ConnectionError, TimeoutError) as exc:  # TunnelError, KernelConnectionError
        return Probe(False, str(exc), answered=False)
    try:
        assert transport.route is not None
        return Probe(True, transport.route.describe(), transport.route.answers_while_busy, server_info=transport.server_info)
    finally:
        await transport.close()
