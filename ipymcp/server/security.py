"""The HTTP gate in front of the MCP app: loopback Host, no browser Origin, bearer token — in that
order, so a DNS-rebinding page learns nothing from a 401 (421 first, then 403, then 401).

The SDK's own Host/Origin check (``TransportSecuritySettings``) would repeat the first two steps
after ours with the same lists; it is turned off (``sdk_transport_security``) so the order above
is decided in one place.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from .gate import TRUSTED_SCOPE_KEY


def new_token() -> str:
    return secrets.token_urlsafe(32)


def sdk_transport_security() -> Any:
    """The SDK's DNS-rebinding check, off: ``BearerAuth`` has answered Host and Origin already."""
    from mcp.server.transport_security import TransportSecuritySettings  # heavy: server thread only

    # The SDK still refuses a POST without a JSON Content-Type with this setting (always on).
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


class BearerAuth:
    """Pure ASGI middleware (so SSE streams are not buffered) that requires ``Authorization: Bearer``.

    The token lives in a mutable holder so it can be rotated without rebuilding the app; every
    request it let through is tracked until it ends, so ``end_requests`` can end them all (the
    streams and calls the old token opened) when the token is rotated.
    """

    def __init__(
        self, app: Any, token_holder: dict[str, str], allowed_hosts: list[str], allowed_origins: list[str]
    ):
        self.app = app
        self.token_holder = token_holder
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins
        import anyio  # built on the server thread: keeps the import off %load_ext

        self._cancel_scope = anyio.CancelScope
        self._requests: set[Any] = set()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        # Host is checked before the token so a DNS-rebinding page learns nothing from a 401.
        if not _matches(headers.get(b"host", b"").decode("latin-1"), self.allowed_hosts):
            return await _reply(send, 421, {"error": "invalid_host", "message": "Host must be a loopback host."})
        origin = headers.get(b"origin")
        if origin is not None and not _matches(origin.decode("latin-1"), self.allowed_origins):
            return await _reply(
                send, 403, {"error": "invalid_origin", "message": "Requests from web pages are refused."}
            )
        expected = f"Bearer {self.token_holder['token']}".encode()
        if not hmac.compare_digest(headers.get(b"authorization", b""), expected):
            return await _reply(send, 401, INVALID_TOKEN, extra=[(b"www-authenticate", b'Bearer error="invalid_token"')])
        scope[TRUSTED_SCOPE_KEY] = True  # the connection gate evicts connections never trusted first
        await self._serve(scope, receive, send)

    async def _serve(self, scope: dict, receive: Any, send: Any) -> None:
        response = _ResponseState(send)
        with self._cancel_scope() as request:
            self._requests.add(request)
            try:
                await self.app(scope, receive, response.send)
            finally:
                self._requests.discard(request)
        if request.cancel_called:  # ended by end_requests: finish the HTTP response cleanly
            await response.finish()

    def end_requests(self) -> int:
        """End every request in progress (on the server loop, right after the token changed)."""
        ended = len(self._requests)
        for request in list(self._requests):
            request.cancel()
        return ended


INVALID_TOKEN = {"error": "invalid_token", "message": "Send 'Authorization: Bearer <token>'; see %mcp in the notebook."}
ROTATED = {"error": "invalid_token", "message": "The token was rotated while this request ran; ask the user for the new one."}


class _ResponseState:
    """Follows one response through ``send`` so an ended request can still close it properly."""

    __slots__ = ("_send", "started", "complete")

    def __init__(self, send: Any):
        self._send = send
        self.started = False
        self.complete = False

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self._send(message)

    async def finish(self) -> None:
        import anyio

        with anyio.CancelScope(shield=True):
            try:
                if not self.started:
                    await _reply(self._send, 401, ROTATED)
                elif not self.complete:
                    await self._send({"type": "http.response.body", "body": b"", "more_body": False})
            except (OSError, RuntimeError):  # the client is gone already
                pass


class SessionCap:
    """Words the SDK's refusal of a new session beyond ``max_sessions`` as a sentence.

    The SDK refuses it (and never evicts an open session to make room), but its 503 only says
    "Too many open sessions"; this says which setting, how long idle sessions live, and what the
    user can do. Only requests that would open a handshake-era session are looked at.
    """

    def __init__(self, app: Any, max_sessions: int, idle_timeout: float):
        self.app = app
        message = (
            f"Too many open MCP sessions ({max_sessions}, the limit c.IPyMCP.max_sessions). Close sessions "
            f"you no longer use, or retry later: a session with no request for {idle_timeout:g} s ends "
            "(c.IPyMCP.session_idle_timeout). The user can end them all with %mcp token --rotate."
        )
        self.refusal = {"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": message}}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _opens_session(scope):
            return await self.app(scope, receive, send)
        refused = False

        async def send_or_reword(message: dict) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 503:
                refused = True  # the SDK's only 503 on this path: the session limit
            elif not refused:
                await send(message)
            elif not message.get("more_body", False):
                await _reply(send, 503, self.refusal)

        await self.app(scope, receive, send_or_reword)


def _opens_session(scope: dict) -> bool:
    """A request the SDK would answer by opening a handshake-era session (no session id yet)."""
    if scope.get("method") != "POST":
        return False
    version = None
    for name, value in scope.get("headers") or ():
        if name == b"mcp-session-id":
            return False
        if name == b"mcp-protocol-version":
            version = value.decode("latin-1")
    if version is None:
        return True
    from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

    return version in HANDSHAKE_PROTOCOL_VERSIONS


def _matches(value: str, patterns: list[str]) -> bool:
    """``value`` equals a pattern, or a ``prefix:*`` pattern with a numeric port."""
    for pattern in patterns:
        if pattern.endswith(":*"):
            if value.startswith(pattern[:-1]) and value[len(pattern) - 1 :].isdigit():
                return True
        elif value == pattern:
            return True
    return False


async def _reply(send: Any, status: int, body: dict, extra: list | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": payload})
