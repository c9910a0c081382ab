"""A test-only Jupyter server extension: what the server does with kernel websockets.

``GET /ipymcp-probe`` (token-authenticated) answers with the connection class the server uses
and, for each open kernel websocket, its class and whether ``TCP_NODELAY`` is set on its socket
(read from the real socket: no timing involved). ``UserConnection`` plays a connection class a
user configured. Enabled with ``--ServerApp.jpserver_extensions=serverext_probe=True`` and
``tests/`` on the server's ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from tornado import web


class UserConnection(ZMQChannelsWebsocketConnection):
    """A class of the user's own (e.g. for auditing); ipymcp must leave it in place."""


class ProbeHandler(JupyterHandler):
    @web.authenticated
    def get(self) -> None:
        configured = self.settings["kernel_websocket_connection_class"]
        sockets = []
        for connection in list(ZMQChannelsWebsocketConnection._open_sockets):
            stream = connection.websocket_handler.ws_connection.stream
            nodelay = stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            sockets.append({"class": type(connection).__qualname__, "nodelay": bool(nodelay)})
        self.finish(json.dumps({"connection_class": configured.__qualname__, "sockets": sockets}))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "serverext_probe"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [(base.rstrip("/") + "/ipymcp-probe", ProbeHandler)])
