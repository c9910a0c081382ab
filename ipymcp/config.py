"""User-facing configuration: ``c.IPyMCP.<name>`` in an IPython profile, or env vars."""

from __future__ import annotations

import os

from traitlets import Bool, Float, Integer, List, Unicode, default
from traitlets.config import Configurable


class IPyMCP(Configurable):
    """Settings of the MCP server that ``%load_ext ipymcp`` starts inside the kernel."""

    host = Unicode("127.0.0.1", help="Interface to listen on. Keep it loopback.").tag(config=True)
    port = Integer(help="TCP port; 0 picks a free one. Env: IPYMCP_PORT.").tag(config=True)
    token = Unicode(
        help="Bearer token clients must send; empty generates a random one. Env: IPYMCP_TOKEN."
    ).tag(config=True)
    allowed_origins = List(
        Unicode(),
        default_value=[],
        help="Browser Origins allowed to call the server. Empty refuses every request that carries "
        "an Origin header (MCP clients are not browsers).",
    ).tag(config=True)
    allowed_hosts = List(
        Unicode(),
        default_value=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        help="Host headers accepted (DNS-rebinding protection).",
    ).tag(config=True)
    start_timeout = Float(20.0, help="Seconds to wait for the server thread to come up.").tag(config=True)

    execute_timeout = Float(60.0, help="Default timeout of the execute tool, in seconds.").tag(config=True)
    max_output_chars = Integer(
        20_000, help="Text budget per tool call; head and tail are kept when cut."
    ).tag(config=True)
    max_images = Integer(4, help="Images returned per tool call.").tag(config=True)
    max_image_bytes = Integer(
        2_000_000, help="Total bytes of images (decoded) returned per tool call."
    ).tag(config=True)
    max_image_pixels = Integer(
        1_600_000, help="Images larger than this many pixels are downscaled (needs Pillow)."
    ).tag(config=True)
    list_variables_limit = Integer(200, help="Default limit of list_variables.").tag(config=True)

    show_status = Bool(True, help="Show a status line in the cell that loads ipymcp.").tag(config=True)

    @default("port")
    def _default_port(self) -> int:
        return int(os.environ.get("IPYMCP_PORT") or 0)

    @default("token")
    def _default_token(self) -> str:
        return os.environ.get("IPYMCP_TOKEN", "")
