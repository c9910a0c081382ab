"""A client of one kernel's websocket on a Jupyter server (``/api/kernels/<id>/channels``).

Every connection gets a fresh Jupyter session id: jupyter_server drops an older websocket that
uses the same one ("Replacing stale connection"), which would disconnect the user's tab. The
websocket carries every IOPub message of the kernel, including the outputs of other clients'
cells; listeners pick what is theirs.

Latency: jupyter_server does not set ``TCP_NODELAY`` on kernel websockets, so its small
back-to-back writes wait for our ACK, which Linux delays by ~40 ms. Re-arming ``TCP_QUICKACK``
after every frame we read or write removes that wait on a direct connection (it does not help
through a proxy, whose own hop delays the ACK).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import uuid
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from .endpoint import Endpoint
from .wire import V1_PROTOCOL, Message, WireError, decode, encode, new_message

log = logging.getLogger("ipymcp.remote")
# The websockets library's own logger: its debug lines show the handshake's headers, the token
# in Authorization among them, so it never logs below INFO whatever the root level is.
_protocol_log = logging.getLogger("ipymcp.remote.websocket-protocol")
_protocol_log.setLevel(logging.INFO)

Listener = Callable[[Message], None]


class KernelConnectionError(ConnectionError):
    """The kernel websocket could not be opened or was lost; the message says what to do."""


class ServerStoppedError(KernelConnectionError):
    """The JupyterHub user server is not running: retrying cannot bring the kernel back."""


class KernelWebsocket:
    """One websocket to one kernel: send messages, await replies, listen to IOPub."""

    def __init__(
        self,
        endpoint: Endpoint,
        kernel_id: str,
        *,
        framing: str = "auto",
        quickack: bool = True,
        username: str = "ipymcp",
    ):
        if framing not in ("auto", "legacy"):
            raise ValueError("framing is 'auto' (v1, legacy if the server has no v1) or 'legacy'")
        self.endpoint = endpoint
        self.kernel_id = kernel_id
        self.framing = framing
        self.quickack = quickack and hasattr(socket, "TCP_QUICKACK")
        self.username = username
        self.session_id = uuid.uuid4().hex
        self.listeners: list[Listener] = []
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._ws: ClientConnection | None = None
        self._socket: socket.socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._replies: dict[str, asyncio.Future[Message]] = {}

    # -- connection ------------------------------------------------------------------------------
    async def connect(self, timeout: float = 20.0) -> KernelWebsocket:
        url = self.endpoint.websocket_url(f"api/kernels/{self.kernel_id}/channels", session_id=self.session_id)
        try:
            self._ws = await connect(
                url,
                additional_headers=self.endpoint.request_headers(),
                subprotocols=None if self.framing == "legacy" else [V1_PROTOCOL],
                ssl=self.endpoint.ssl_context(),
                open_timeout=timeout,
                # Other clients' cell outputs share this socket: a size cap would drop the tunnel
                # on a user's big plot.
                max_size=None,
                compression=None,
                logger=_protocol_log,
            )
        except websockets.InvalidStatus as exc:
            stopped = self.endpoint.hub_not_running(exc.response.status_code, exc.response.headers.get("Location"))
            if stopped:
                raise ServerStoppedError(stopped) from None
            raise KernelConnectionError(self._refusal(exc.response.status_code)) from None
        except ssl.SSLCertVerificationError:
            raise KernelConnectionError(
                f"the TLS certificate of {self.endpoint.display_url} is not trusted: pass its CA bundle "
                "(--ca-file, or SSL_CERT_FILE)"
            ) from None
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise KernelConnectionError(
                f"could not open the websocket of kernel {self.kernel_id} at {self.endpoint.display_url}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        self._socket = self._ws.transport.get_extra_info("socket")
        self._rearm_quickack()
        self._reader = asyncio.create_task(self._read(), name=f"kernel-ws-{self.kernel_id[:8]}")
        log.debug("kernel websocket open (%s framing)", self.subprotocol or "legacy")
        return self

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol if self._ws is not None else None

    @property
    def is_open(self) -> bool:
        return self._ws is not None and not self.closed.is_set()

    async def close(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        self._lost("closed by the client")

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake, as a network failure would."""
        if self._ws is not None:
            self._ws.transport.abort()

    def _refusal(self, status: int) -> str:
        where = self.endpoint.display_url
        if status in (401, 403):
            return (
                f"the Jupyter server at {where} refused the token ({status}): check JUPYTER_TOKEN (on a "
                "JupyterHub, a token with access to this user's server)"
            )
        if status == 404:
            return f"kernel {self.kernel_id} does not exist on {where} (404): it was shut down or never started"
        return f"the Jupyter server at {where} refused the kernel websocket ({status})"

    # -- sending ---------------------------------------------------------------------------------
    def message(
        self, channel: str, msg_type: str, content: dict[str, Any], subshell_id: str | None = None
    ) -> Message:
        return new_message(channel, msg_type, content, self.session_id, self.username, subshell_id)

    async def send(self, message: Message) -> None:
        if not self.is_open:
            raise KernelConnectionError(f"the kernel websocket is closed ({self.close_reason})")
        assert self._ws is not None
        try:
            await self._ws.send(encode(message, self.subprotocol))
        except websockets.ConnectionClosed as exc:
            self._lost(f"connection closed: {exc}")
            raise KernelConnectionError(f"the kernel websocket closed while sending ({exc})") from None
        self._rearm_quickack()

    async def request(self, message: Message, timeout: float = 30.0) -> Message:
        """Send a ``*_request`` and return its ``*_reply`` (same channel, parent = the request)."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[message.msg_id] = future
        try:
            await self.send(message)
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"no {message.msg_type.replace('_request', '_reply')} within {timeout:g} s") from None
        finally:
            self._replies.pop(message.msg_id, None)

    # -- receiving -------------------------------------------------------------------------------
    async def _read(self) -> None:
        assert self._ws is not None
        reason = "closed by the server"
        try:
            async for frame in self._ws:
                self._rearm_quickack()
                try:
                    message = decode(frame, self.subprotocol)
                except WireError as exc:
                    log.debug("skipped a frame: %s", exc)
                    continue
                self._dispatch(message)
        except websockets.ConnectionClosed as exc:
            reason = f"connection closed: {exc}"
        except Exception as exc:  # noqa: BLE001 - the reader must end by marking the socket lost
            log.exception("kernel websocket reader failed")
            reason = f"reader failed: {type(exc).__name__}: {exc}"
        finally:
            self._lost(reason)

    def _dispatch(self, message: Message) -> None:
        if message.channel != "iopub" and message.msg_type.endswith("_reply"):
            future = self._replies.get(message.parent_id or "")
            if future is not None and not future.done():
                future.set_result(message)
        for listener in list(self.listeners):
            try:
                listener(message)
            except Exception:  # noqa: BLE001 - one listener must not stop the others
                log.exception("kernel websocket listener failed")

    def _lost(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(KernelConnectionError(f"the kernel websocket closed ({reason})"))
        log.debug("kernel websocket lost: %s", reason)

    def _rearm_quickack(self) -> None:
        if self.quickack and self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
