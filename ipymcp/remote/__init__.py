"""Reach ipymcp in a kernel that runs on a Jupyter server (remote machine, JupyterHub), through the
kernel's own websocket: no port of ours, the Jupyter server's authentication.

- ``endpoint.Endpoint``: the server URL, token, TLS and proxy headers;
- ``rest.ServerAPI``: sessions, kernels, restart (discovery never touches the kernel);
- ``websocket.KernelWebsocket`` + ``wire``: Jupyter messages over the kernel websocket;
- ``route``: subshell, control channel or main shell;
- ``tunnel.KernelTunnelTransport``: an MCP transport over an ``ipymcp.mcp`` comm;
- ``client.connect_kernel`` / ``probe_kernel``: the SDK client on top, and "is ipymcp loaded?".

The kernel side is ``ipymcp.server.tunnel``; docs/remote-design.md explains the protocol.
"""

from __future__ import annotations

from .client import Probe, RemoteKernel, connect_kernel, probe_kernel
from .endpoint import Endpoint, EndpointError
from .rest import ServerAPI, ServerError, ServerMisconfigured, ServerNotRunning
from .tunnel import KernelTunnelTransport, NotLoadedError, TunnelError, TunnelOptions

__all__ = [
    "Endpoint",
    "EndpointError",
    "KernelTunnelTransport",
    "NotLoadedError",
    "Probe",
    "RemoteKernel",
    "ServerAPI",
    "ServerError",
    "ServerMisconfigured",
    "ServerNotRunning",
    "TunnelError",
    "TunnelOptions",
    "connect_kernel",
    "probe_kernel",
]
