"""The Jupyter server's REST API, the parts a remote client needs: sessions, kernels, restart.

Discovery goes through REST, never through the kernel: REST calls are not kernel activity, so an
idle agent does not keep a hub's idle culler from stopping the server.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx2

from .endpoint import Endpoint

log = logging.getLogger("ipymcp.remote")


class ServerError(RuntimeError):
    """A REST call failed; the message says what to check (it never contains the token)."""


class ServerNotRunning(ServerError):
    """A JupyterHub user server that is not running (stopped, culled, not started yet)."""


class ServerMisconfigured(ServerError):
    """Retrying cannot help: the token is refused, the URL is not a Jupyter server's API, or
    its TLS certificate is not trusted."""


class ServerAPI:
    """``async with ServerAPI(endpoint) as api: await api.sessions()``."""

    def __init__(self, endpoint: Endpoint, timeout: float = 10.0):
        self.endpoint = endpoint
        self._http = httpx2.AsyncClient(
            headers=endpoint.request_headers(),
            params=endpoint.query,
            verify=endpoint.ssl_context() or True,
            timeout=timeout,
            follow_redirects=False,
        )

    async def __aenter__(self) -> ServerAPI:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the calls -----------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        return await self._call("GET", "api/status")

    async def sessions(self) -> list[dict[str, Any]]:
        """Every notebook/console session: ``path``, ``kernel.id``, ``kernel.execution_state``…"""
        return await self._call("GET", "api/sessions")

    async def kernels(self) -> list[dict[str, Any]]:
        return await self._call("GET", "api/kernels")

    async def kernel(self, kernel_id: str) -> dict[str, Any] | None:
        """The kernel's model (``execution_state``, ``last_activity``…), or None once it is gone."""
        try:
            return await self._call("GET", f"api/kernels/{kernel_id}")
        except _NotFound:
            return None

    async def restart_kernel(self, kernel_id: str) -> dict[str, Any]:
        try:
            return await self._call("POST", f"api/kernels/{kernel_id}/restart")
        except _NotFound:
            raise ServerError(f"kernel {kernel_id} does not exist on {self.endpoint.display_url}") from None

    # -- plumbing ------------------------------------------------------------------------------
    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        url = self.endpoint.http_url(path)
        try:
            response = await self._http.request(method, url, json=body)
        except httpx2.ConnectError as exc:
            raise self._unreachable(exc) from None
        except httpx2.TimeoutException:
            raise ServerError(f"the Jupyter server at {self.endpoint.display_url} did not answer {path} in time") from None
        except httpx2.HTTPError as exc:
            raise ServerError(f"{method} {path} on {self.endpoint.display_url} failed: {type(exc).__name__}") from None
        if response.status_code == 404:
            raise _NotFound(path)
        if response.status_code in (401, 403):
            raise ServerMisconfigured(
                f"the Jupyter server at {self.endpoint.display_url} refused the token ({response.status_code}): "
                "check JUPYTER_TOKEN (on a JupyterHub, a token with access to this user's server)"
            )
        stopped = self.endpoint.hub_not_running(response.status_code, response.headers.get("location"))
        if stopped:
            raise ServerNotRunning(stopped)
        if response.is_redirect:
            raise ServerMisconfigured(
                f"{self.endpoint.display_url} redirected {path} to {response.headers.get('location', '?')}: not a "
                "Jupyter server API (a login page?); give the server's base URL, e.g. https://hub/user/NAME/"
            )
        if response.status_code >= 400:
            raise ServerError(f"{method} {path} on {self.endpoint.display_url} answered {response.status_code}")
        return response.json() if response.content else None

    def _unreachable(self, exc: Exception) -> ServerError:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():  # httpx2 gives only the text
            return ServerMisconfigured(
                f"the TLS certificate of {self.endpoint.display_url} is not trusted: pass its CA bundle "
                "(--ca-file, or SSL_CERT_FILE)"
            )
        return ServerError(f"no Jupyter server answers at {self.endpoint.display_url} ({text or type(exc).__name__})")


class _NotFound(ServerError):
    pass
