"""The HTTP gate in front of the MCP app: bearer token on every request.

Host and Origin checks are the SDK's own (``TransportSecuritySettings``); this module only
configures them strictly, because the SDK's default admits any ``http://localhost:*`` page,
JupyterLab's included.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any


def new_token() -> str:
    return secrets.token_urlsafe(32)


def transport_security(allowed_hosts: list[str], allowed_origins: list[str]) -> Any:
    from mcp.server.transport_security import TransportSecuritySettings  # heavy: server thread only

    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(allowed_hosts),
        allowed_origins=list(allowed_origins),
    )


class BearerAuth:
    """Pure ASGI middleware (so SSE streams are not buffered) that requires ``Authorization: Bearer``.

    The token lives in a mutable holder so it can be rotated without rebuilding the app.
    """

    def __init__(
        self, app: Any, token_holder: dict[str, str], allowed_hosts: list[str], allowed_origins: list[str]
    ):
        self.app = app
        self.token_holder = token_holder
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins

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
            return await _reply(
                send,
                401,
                {"error": "invalid_token", "message": "Send 'Authorization: Bearer <token>'; see %mcp in the notebook."},
                extra=[(b"www-authenticate", b'Bearer error="invalid_token"')],
            )
        await self.app(scope, receive, send)


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
