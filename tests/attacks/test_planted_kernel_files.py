"""Files the kernel itself reads at start: it trusts only what the user's own processes wrote.

At ``%load_ext`` the kernel reads two kinds of files it did not just write:

* ``remember-*.json`` (``ipymcp/restart/endpoint.py``): the port and bearer token of the last
  server of this kernel or notebook, reused so clients keep working after a restart. A planted
  file would make the kernel's server accept a token the attacker chose: anyone who knows it
  drives the kernel;
* the Jupyter servers' ``jpserver-*.json`` (``ipymcp/server/jupyter.py``): whose ``/api/sessions``
  names the notebook of this kernel. A planted one names the attacker's server, which answers
  with a notebook path of its choosing (the workspace root, the remembered permissions and the
  notebook the agent is told about follow that path) and gets a request from the kernel.

The attacker is another local user who controls the directory the files are looked up in (a
shared ``JUPYTER_RUNTIME_DIR``) or planted a file there. The tests run as root: a foreign owner
is made with chown to uid 65534 (nobody). Each kernel gets a runtime directory of its own, so
nothing planted here reaches another test.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import KernelHarness
from test_forged_runtime_files import NOBODY, AttackerServer

ATTACKER_TOKEN = "the-attackers-own-token-0123456789"


class SessionsServer(AttackerServer):
    """A Jupyter server of the attacker's: every /api/sessions lookup gets a false notebook path."""

    def __init__(self, kernel_id: str) -> None:
        super().__init__()
        answer = json.dumps([{"path": "evil/planted.ipynb", "kernel": {"id": kernel_id}}]).encode()
        handler = self.server.RequestHandlerClass
        recorded = self.received

        def do_GET(self: Any) -> None:  # noqa: N802 - the http.server hook
            recorded.append({"path": self.path, "headers": dict(self.headers)})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        handler.do_GET = do_GET  # type: ignore[attr-defined]


def own_runtime_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="kernel-runtime-"))


def plant(path: Path, data: dict[str, Any], problem: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    os.chmod(path, 0o600)
    if problem == "owned by another user":
        if os.geteuid() != 0:
            pytest.skip("making a file owned by another user needs root")
        os.chown(path, NOBODY, NOBODY)
    elif problem == "writable by others":
        os.chmod(path, 0o666)
    elif problem == "in a directory another user owns":
        if os.geteuid() != 0:
            pytest.skip("making a directory owned by another user needs root")
        os.chown(path, NOBODY, NOBODY)
        os.chown(path.parent, NOBODY, NOBODY)
    elif problem == "in a directory others can write":
        os.chmod(path.parent, 0o777)


PROBLEMS = ["owned by another user", "writable by others", "in a directory another user owns", "in a directory others can write"]


def status(kernel: KernelHarness) -> dict[str, Any]:
    out = kernel.run(
        "import ipymcp._state as _s, json; r = _s.runtime; assert r.wait_ready(30), r.state\n"
        "print(json.dumps({'token': r.token, 'notebook_path': r.notebook_path, 'url': r.url})); del _s, r"
    )["stdout"]
    return json.loads(out)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_a_planted_remembered_endpoint_does_not_give_the_server_the_attackers_token(problem: str) -> None:
    runtime = own_runtime_dir()
    kernel = KernelHarness(env={"JUPYTER_RUNTIME_DIR": str(runtime)})
    try:
        memory = runtime / "ipymcp" / f"remember-kernel-{kernel.kernel_id}.json"
        plant(memory, {"port": 0, "host": "127.0.0.1", "token": ATTACKER_TOKEN, "kernel_id": kernel.kernel_id}, problem)
        kernel.run("%load_ext ipymcp")
        assert status(kernel)["token"] != ATTACKER_TOKEN
    finally:
        kernel.shutdown()


@pytest.mark.parametrize("problem", PROBLEMS)
def test_a_planted_jupyter_server_file_gets_no_request_and_names_no_notebook(problem: str) -> None:
    runtime = own_runtime_dir()
    kernel = KernelHarness(env={"JUPYTER_RUNTIME_DIR": str(runtime), "JPY_SESSION_NAME": None})
    attacker = SessionsServer(kernel.kernel_id)
    try:
        # pid 1 is alive: the file passes the "is its server running" test a real one would.
        server = {"url": f"http://127.0.0.1:{attacker.port}/", "token": ATTACKER_TOKEN, "pid": 1, "root_dir": "/"}
        plant(runtime / "jpserver-1.json", server, problem)
        kernel.run("%load_ext ipymcp")
        assert status(kernel)["notebook_path"] is None
        assert attacker.received == []
    finally:
        attacker.close()
        kernel.shutdown()


def test_a_genuine_jupyter_server_file_still_names_the_notebook() -> None:
    """The positive control: the same file, written as Jupyter writes it (the user's, 0600), is used."""
    runtime = own_runtime_dir()
    kernel = KernelHarness(env={"JUPYTER_RUNTIME_DIR": str(runtime), "JPY_SESSION_NAME": None})
    server = SessionsServer(kernel.kernel_id)
    try:
        info = {"url": f"http://127.0.0.1:{server.port}/", "token": "t", "pid": os.getpid(), "root_dir": "/"}
        plant(runtime / "jpserver-2.json", info, "none")
        kernel.run("%load_ext ipymcp")
        assert status(kernel)["notebook_path"] == "/evil/planted.ipynb"
        assert [r["path"] for r in server.received] == ["/api/sessions"]
    finally:
        server.close()
        kernel.shutdown()
