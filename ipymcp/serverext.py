"""ipymcp's Jupyter server extension: keeps the user's view true and the tunnel fast.

Enabled by ``jupyter-config/jupyter_server_config.d/ipymcp.json`` (installed with the package in
the Jupyter server's environment, like the labextension); ``jupyter server extension disable
ipymcp.serverext`` turns it off. It never touches kernels, and does nothing to a server where no
agent uses ipymcp's tunnel beyond the two settings below.

1. **The kernel indicator and REST ``execution_state`` stay true.** A kernel wraps every request in
   ``status`` busy/idle; JupyterLab's indicator and the server's ``execution_state`` follow every
   status except those whose parent's type is in ``MappingKernelManager.untracked_message_types``
   (JupyterLab >= 4.5 reads the list from its page config, which jupyterlab_server copies from
   the kernel manager). The tunnel's per-call requests are ipymcp's own type, ``ipymcp_msg``: it
   is added to that list, and ``comm_msg`` is not (widgets' activity still shows). The tunnel also
   creates and deletes a kernel subshell when it connects and leaves (ipykernel >= 7, on the
   control channel). jupyter_server's own rule for the list is "a superset of the message types
   sent on any channel other than the shell channel", and its default predates subshells, so the
   subshell control requests are added too: creating a subshell runs no code.
2. **No-delay kernel websockets.** jupyter_server never sets ``TCP_NODELAY`` on kernel websockets:
   its small back-to-back writes then wait for the client's delayed ACK (~40 ms each on Linux).
   The supported hook, ``ServerApp.kernel_websocket_connection_class``, gets a subclass of the
   default class that sets no-delay when a websocket connects. A class the user configured is
   left as it is (with a log line saying what that costs and how to combine both).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

# The tunnel's own request type (ipymcp/server/tunnel.py MESSAGE_TYPE; not imported from there so
# the Jupyter server does not import the kernel side).
TUNNEL_MESSAGE_TYPE = "ipymcp_msg"
# Control-channel requests (and replies) jupyter_server's default list predates (kernel subshells,
# ipykernel >= 7, JEP 91). No user code runs for them.
SUBSHELL_MESSAGE_TYPES = (
    "create_subshell_request",
    "create_subshell_reply",
    "delete_subshell_request",
    "delete_subshell_reply",
    "list_subshell_request",
    "list_subshell_reply",
)
UNTRACKED = (TUNNEL_MESSAGE_TYPE, *SUBSHELL_MESSAGE_TYPES)


class NoDelayKernelWebsocketConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's kernel websocket connection, with ``TCP_NODELAY`` on its socket."""

    def connect(self) -> Any:
        # open() calls connect() once the handshake is done, so the stream exists here.
        with contextlib.suppress(Exception):  # a closed or odd transport: no-delay is only a speed-up
            self.websocket_handler.set_nodelay(True)
        return super().connect()


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "ipymcp.serverext"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Once the kernel manager and the web app exist (the connection class's default needs the
    gateway settings, which do not exist yet when extensions are linked)."""
    use_nodelay_connections(serverapp, serverapp.log)
    added = untrack_tunnel_messages(serverapp)
    serverapp.log.info(
        "ipymcp: %s not counted as kernel activity (the kernel indicator and execution_state stay "
        "true while an agent works through ipymcp's tunnel)",
        ", ".join(added) if added else "its message types were already",
    )


def use_nodelay_connections(serverapp: Any, log: logging.Logger) -> bool:
    """Set the no-delay connection class unless the user configured a class of their own."""
    if not serverapp.has_trait("kernel_websocket_connection_class"):
        log.info("ipymcp: this jupyter_server has no kernel_websocket_connection_class; no TCP_NODELAY")
        return False
    current = serverapp.kernel_websocket_connection_class
    if isinstance(current, type) and issubclass(current, NoDelayKernelWebsocketConnection):
        return True
    if current is not ZMQChannelsWebsocketConnection:
        log.warning(
            "ipymcp: ServerApp.kernel_websocket_connection_class is %s.%s, so ipymcp leaves it and does "
            "not set TCP_NODELAY on kernel websockets: back-to-back agent calls through Jupyter can wait "
            "~40 ms each (Nagle's algorithm). To have both, derive your class from "
            "ipymcp.serverext.NoDelayKernelWebsocketConnection, or call "
            "self.websocket_handler.set_nodelay(True) in its connect().",
            getattr(current, "__module__", "?"),
            getattr(current, "__qualname__", current),
        )
        return False
    serverapp.kernel_websocket_connection_class = NoDelayKernelWebsocketConnection
    # The web app was built from the trait already; its handlers read the class from the settings
    # on every new websocket (jupyter_server/services/kernels/websocket.py).
    settings = getattr(getattr(serverapp, "web_app", None), "settings", None)
    if isinstance(settings, dict):
        settings["kernel_websocket_connection_class"] = NoDelayKernelWebsocketConnection
    log.info("ipymcp: kernel websockets use TCP_NODELAY (ipymcp.serverext.NoDelayKernelWebsocketConnection)")
    return True


def untrack_tunnel_messages(serverapp: Any) -> list[str]:
    """Add ipymcp's types to the kernel manager's untracked list (and to the page config when a
    frontend extension has copied it already); the types added."""
    manager = serverapp.kernel_manager
    current = list(getattr(manager, "untracked_message_types", None) or [])
    added = [t for t in UNTRACKED if t not in current]
    if added and manager.has_trait("untracked_message_types"):
        manager.untracked_message_types = [*current, *added]
    # jupyterlab_server copies the list into the page config when its own extension loads; extensions
    # load in name order (ipymcp.serverext before jupyterlab/notebook), but one loaded earlier must
    # see the change too.
    settings = getattr(getattr(serverapp, "web_app", None), "settings", {})
    page_config = settings.get("page_config_data")
    if isinstance(page_config, dict) and isinstance(page_config.get("untracked_message_types"), list):
        shown = page_config["untracked_message_types"]
        shown.extend(t for t in UNTRACKED if t not in shown)
    return added
