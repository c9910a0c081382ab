"""Where a Jupyter server is and how to authenticate to it: base URL, token, TLS, extra headers.

The token is a secret: it is kept out of ``repr``, logs and error messages, and only ever sent
to the Jupyter server in the ``Authorization`` header (never into a kernel).
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from dataclasses import dataclass, field


class EndpointError(ValueError):
    """A server URL or option that cannot work; the message says which and why."""


@dataclass(frozen=True)
class Endpoint:
    """A Jupyter server (or a JupyterHub user server) reached at ``base_url``.

    ``headers`` and ``query`` are added to every REST request and to the websocket handshake
    (proxies such as Colab's runtime proxy want their own token that way). ``ca_file`` adds a CA
    bundle to the verified TLS context; ``verify=False`` turns verification off (tests only).
    """

    base_url: str
    token: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    query: dict[str, str] = field(default_factory=dict, repr=False)
    ca_file: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise EndpointError(
                f"{parts.scheme}://{parts.hostname or ''}{parts.path} is not a Jupyter server URL: give "
                "http(s)://host[:port][/base/path]"
            )
        if parts.username or parts.password:
            raise EndpointError("put the Jupyter token in JUPYTER_TOKEN (or a token file), not in the URL")
        if self.ca_file is not None and not os.path.isfile(self.ca_file):
            raise EndpointError(f"CA file {self.ca_file!r} does not exist")
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        object.__setattr__(self, "base_url", urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")))
        # Query parameters of the URL itself (e.g. a proxy token) are kept as extra query.
        if parts.query:
            merged = dict(urllib.parse.parse_qsl(parts.query))
            merged.update(self.query)
            object.__setattr__(self, "query", merged)

    @property
    def display_url(self) -> str:
        """Safe to print: the URL's query (which may hold a proxy token) lives in ``query``."""
        return self.base_url

    @property
    def secure(self) -> bool:
        return self.base_url.startswith("https:")

    def http_url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    def websocket_url(self, path: str, **query: str) -> str:
        scheme = "wss" if self.secure else "ws"
        url = scheme + self.base_url[self.base_url.index(":") :] + path.lstrip("/")
        return url + "?" + urllib.parse.urlencode({**query, **self.query})

    def hub_not_running(self, status: int, location: str | None = None) -> str | None:
        """What to tell when a request to a JupyterHub user server got this answer from the hub in
        its place, because the server is not running: 424 (JupyterHub's code for it), or a
        redirect of ``…/user/NAME/path`` to ``…/hub/user/NAME/path``. None for anything else."""
        base = urllib.parse.urlsplit(self.base_url).path
        if "/user/" not in base:
            return None
        redirected = 300 <= status < 400 and "/hub/user/" in urllib.parse.urlsplit(location or "").path
        if status != 424 and not redirected:
            return None
        home = urllib.parse.urljoin(self.base_url, base[: base.index("/user/")] + "/hub/home")
        return (
            f"The JupyterHub server at {self.display_url} is not running (the hub answers in its place): it was "
            "stopped (by its owner, an admin or the hub's idle culler) or has not started yet, and kernels do "
            f"not outlive their server. Start it on the hub's home page ({home}), open the notebook and run "
            "%load_ext ipymcp in it; calls work again after that"
        )

    def request_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        return headers

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (system CAs, ``SSL_CERT_FILE``, plus ``ca_file``) for https."""
        if not self.secure:
            return None
        context = ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
