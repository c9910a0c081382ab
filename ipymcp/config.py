"""User-facing configuration: ``c.IPyMCP.<name>`` in an IPython profile, or env vars."""

from __future__ import annotations

import os

from traitlets import Bool, Enum, Float, Integer, List, Unicode, default
from traitlets.config import Configurable

from .policy.permissions import LEVELS


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
    serve_http = Bool(
        True,
        help="Listen for MCP clients over HTTP on host:port. False: no listener at all; agents reach "
        "the kernel only through its Jupyter server (ipymcp.mcp comms, e.g. from a remote client), and "
        "no runtime file is written. Setting port as well is an error. Env: IPYMCP_SERVE_HTTP=0.",
    ).tag(config=True)

    execute_timeout = Float(
        60.0, help="Seconds execute waits in total (queue + run) when the call gives no timeout."
    ).tag(config=True)
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
    list_variables_limit = Integer(
        200, help="Rows list_variables returns when the call gives no limit."
    ).tag(config=True)
    inspection_timeout = Float(
        10.0,
        help="Seconds list_variables, inspect_variable and the variables resource may take; a call "
        "over it is answered with an error and keeps its inspection thread until it returns.",
    ).tag(config=True)
    max_pattern_chars = Integer(
        200, help="Longest list_variables pattern accepted; longer ones are refused."
    ).tag(config=True)

    # -- files and processes (ipymcp/workspace.py, ipymcp/processes.py) -----------------------
    root_dir = Unicode(
        "",
        help="The directory file tools may reach (and where commands start); empty: the notebook's "
        "directory, else the kernel's working directory when ipymcp loaded.",
    ).tag(config=True)
    excluded_paths = List(
        Unicode(),
        help="Locations no file tool reads, lists, writes, moves or deletes: where secrets and "
        "configuration live. Matched on real paths (a symlink or hard link into them is refused too); "
        "'~' is expanded, relative entries are under the workspace root. Default: the Jupyter runtime, "
        "data and config directories, IPython's directory, the kernel environment's etc/jupyter and "
        "etc/ipython, and ~/.ssh, ~/.aws, ~/.config, ~/.local, ~/.netrc ... (the README lists them). Add "
        "with c.IPyMCP.excluded_paths.append(path); [] turns exclusion off.",
    ).tag(config=True)
    read_max_bytes = Integer(
        10_000_000,
        help="Largest file read_file reads whole (images, notebooks, line counts); larger text files "
        "are paged (see read_page_large_files).",
    ).tag(config=True)
    read_page_large_files = Bool(
        True, help="Page text files over read_max_bytes instead of refusing them."
    ).tag(config=True)
    read_max_chars = Integer(60_000, help="Characters one read_file page returns at most.").tag(config=True)
    write_max_bytes = Integer(
        10_000_000, help="Largest content write_file writes and largest file edit_file changes."
    ).tag(config=True)
    list_files_limit = Integer(200, help="Default number of entries list_files returns.").tag(config=True)
    process_buffer_bytes = Integer(
        1_000_000,
        help="Unread output kept per background process; the oldest is dropped beyond it.",
    ).tag(config=True)
    process_stop_grace = Float(
        2.0, help="Seconds between SIGTERM and SIGKILL when stopping a command or process."
    ).tag(config=True)
    max_processes = Integer(16, help="Background processes (start_process) running at once.").tag(config=True)

    history_max_bytes = Integer(
        64 * 1024 * 1024,
        help="Byte budget of the history store (user cells' and agent runs' outputs); the oldest "
        "cells are evicted first when it is exceeded.",
    ).tag(config=True)
    history_max_output_bytes = Integer(
        4 * 1024 * 1024,
        help="Largest single output the history keeps: longer text keeps its head and tail, bigger "
        "bundles keep their small parts and a size note; an Output widget keeps its newest outputs "
        "within it.",
    ).tag(config=True)
    history_page_images = Integer(16, help="Images returned per get_output call.").tag(config=True)

    show_status = Bool(True, help="Show a status line in the cell that loads ipymcp.").tag(config=True)

    # -- restarts (ipymcp/restart.py) -----------------------------------------------------------
    remember_endpoint = Bool(
        True,
        help="Reuse the port and token this notebook's (or this kernel's) previous server had, when "
        "the port is free, so direct-HTTP clients keep working across restarts. Kept in a 0600 file "
        "in the runtime dir, never in the notebook; forgotten when sharing stops. With port set, the "
        "token of that port is reused.",
    ).tag(config=True)
    reload_after_restart = Bool(
        True,
        help="When a kernel running ipymcp is restarted, load ipymcp again in the new kernel (a "
        "detached helper sends a silent %load_ext ipymcp on the same connection file).",
    ).tag(config=True)
    restart_timeout = Float(
        60.0, help="Seconds restart_kernel waits for the notebook view to accept the restart."
    ).tag(config=True)

    # -- the user stays in control (ipymcp/policy) --------------------------------------------
    permissions = Enum(
        list(LEVELS),
        default_value="execute",
        help="What agents may do: read (inspect), edit (+ write files and cells), execute (+ run code), "
        "full (+ terminal). Tools above the level are hidden and refused. Env: IPYMCP_PERMISSIONS. "
        "Change it live with %mcp permissions LEVEL.",
    ).tag(config=True)
    approval = Bool(
        False,
        help="Ask the user before each call that runs code or commands, writes or deletes files, or "
        "changes cells (%mcp approve on|off).",
    ).tag(config=True)
    approval_timeout = Float(120.0, help="Seconds to wait for the user's decision; no answer denies.").tag(config=True)
    approval_max_chars = Integer(
        100_000,
        help="Longest call the approval prompt shows (every argument in full, edits as a diff); a longer "
        "call is refused with an error instead of being shown cut.",
    ).tag(config=True)
    audit_max_bytes = Integer(
        50_000_000,
        help="Byte budget of the audit log: the current file and nine rotated ones together. Each line "
        "is at most 8 KiB, so at least the last 5,000 calls are kept whatever their size.",
    ).tag(config=True)
    max_request_body_bytes = Integer(
        4 * 1024 * 1024, help="Largest HTTP request body accepted; larger ones get 413."
    ).tag(config=True)
    tunnel_max_reply_bytes = Integer(
        2_000_000,
        help="Largest reply sent through the Jupyter server (remote agents): the server sends every "
        "reply to each browser tab of the kernel, so a bigger tool result is cut (its text shortened, "
        "images left out) with a note saying what was left out; 0 sends replies whole.",
    ).tag(config=True)
    max_connections = Integer(
        100,
        help="HTTP connections open at once (each holds one of the kernel's file descriptors). At the "
        "cap a new connection closes the oldest one that is not serving a request; when all are "
        "serving, it is refused.",
    ).tag(config=True)
    header_timeout = Float(
        10.0,
        help="Seconds a connection may wait for its next request header; slower ones are closed. "
        "Streams in progress (SSE, subscriptions/listen) are never closed for idling.",
    ).tag(config=True)
    max_sessions = Integer(
        100,
        help="MCP sessions (handshake-era clients) open at once; a new one beyond it is refused with "
        "an error, never by closing an agent's session.",
    ).tag(config=True)
    session_idle_timeout = Float(
        600.0,
        help="Seconds after which a session with no request in flight and no open stream is closed "
        "(the client then starts a new one).",
    ).tag(config=True)
    max_concurrent_calls = Integer(
        32, help="Tool calls in progress at once, all clients together; more are refused."
    ).tag(config=True)
    max_queued_executions = Integer(
        8, help="Agent executions waiting for the kernel at once; more are refused."
    ).tag(config=True)
    inspection_threads = Integer(
        2, help="Threads that run inspection tools (list_variables …) at once; more calls wait."
    ).tag(config=True)
    busy_cpu_share = Float(
        0.02,
        help="While a user cell runs, the server's own CPU use is paced to this share of one core "
        "so a flood of agent calls cannot slow the user's cell down (0 disables the pacing).",
    ).tag(config=True)

    @default("port")
    def _default_port(self) -> int:
        return int(os.environ.get("IPYMCP_PORT") or 0)

    @default("serve_http")
    def _default_serve_http(self) -> bool:
        return os.environ.get("IPYMCP_SERVE_HTTP", "1").strip().lower() not in ("0", "false", "no", "off")

    @default("permissions")
    def _default_permissions(self) -> str:
        return os.environ.get("IPYMCP_PERMISSIONS") or "execute"

    @default("token")
    def _default_token(self) -> str:
        return os.environ.get("IPYMCP_TOKEN", "")

    @default("excluded_paths")
    def _default_excluded_paths(self) -> list[str]:
        from .workspace import default_excluded_paths

        return default_excluded_paths()
