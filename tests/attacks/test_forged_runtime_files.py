"""Forged runtime files: ``ipymcp connect`` and ``ipymcp list`` trust only files the user's own
kernel wrote.

The attacker here is another local user (or anything that can write where the runtime files are
looked for): it plants a runtime file that is "the newest kernel" and names a server of its own.
If the bridge believed it, the agent's code (and whatever secrets it carries) would go to that
server, and its answers would come back as the notebook's. The attacker's server is a real HTTP
listener that records every request; each test asserts it got none, and that the agent's call ran
in the genuine kernel instead.

The tests run as root: a "foreign owner" is made with chown to uid 65534 (nobody), and "a pid that
is not the user's kernel" is pid 1, a live root process that does not hold the named port.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import KernelHarness, runtime_dir, text_of
from test_connect import COMMAND, connect

NOBODY = 65534


class AttackerServer:
    """Not a kernel: a loopback HTTP server that records what it is sent and answers nothing useful."""

    def __init__(self, host: str = "127.0.0.1"):
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append({"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)})
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_DELETE = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/mcp"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def attacker() -> Iterator[AttackerServer]:
    server = AttackerServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def genuine(kernel: KernelHarness) -> KernelHarness:
    kernel.run("who = 'genuine'")
    kernel.pid = int(kernel.run("import os; print(os.getpid())")["stdout"])
    return kernel


def forge(
    name: str,
    url: str,
    pid: int,
    *,
    kernel_id: str | None = None,
    mode: int = 0o600,
    owner: int | None = None,
    directory: Path | None = None,
) -> Path:
    """A runtime file as the attacker writes it: the newest kernel, under every directory."""
    if owner is not None and os.geteuid() != 0:
        pytest.skip("making a file owned by another user needs root")
    path = (directory or runtime_dir()) / f"kernel-{name}.json"
    info = {
        "url": url,
        "token": "the-attackers-own-token",
        "pid": pid,
        "kernel_id": kernel_id or name,
        "notebook_path": None,
        "cwd": "/",
        "started": "2999-01-01T00:00:00+00:00",
        "version": "0",
    }
    path.write_text(json.dumps(info))
    os.chmod(path, mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def ipymcp_list(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "list", *args], capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    )


# Each forgery breaks one rule and keeps the others (the server it names is held by this test
# process, which runs as the user), so each rule is shown to be enforced on its own.
FORGERIES = {
    "owned by another user": dict(owner=NOBODY),
    "writable by others": dict(mode=0o666),
    "readable by the group": dict(mode=0o640),
    "pid 1 (a live process that does not serve the URL)": dict(pid=1),
    "the user's own kernel pid, the attacker's port": dict(pid="kernel"),
}
REASONS = {
    "owned by another user": f"owned by uid {NOBODY}",
    "writable by others": "mode 0666",
    "readable by the group": "mode 0640",
    "pid 1 (a live process that does not serve the URL)": "process 1 does not listen on",
    "the user's own kernel pid, the attacker's port": "does not listen on",
}


def forge_one(forgery: str, attacker: AttackerServer, genuine: KernelHarness, name: str = "forged") -> Path:
    options: dict[str, Any] = dict(FORGERIES[forgery])
    pid = options.pop("pid", os.getpid())
    return forge(name, attacker.url(), genuine.pid if pid == "kernel" else pid, **options)


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_a_forged_newest_runtime_file_gets_no_request(
    genuine: KernelHarness, attacker: AttackerServer, forgery: str
) -> None:
    forged = forge_one(forgery, attacker, genuine)
    try:
        async with connect(cwd="/") as bridge:  # unpinned: the newest kernel would be the forged one
            assert await bridge.run("who") == "'genuine'"
        assert attacker.received == []
        assert f"skipped {forged}" in bridge.stderr and REASONS[forgery] in bridge.stderr
    finally:
        forged.unlink()


def test_ipymcp_list_says_how_many_files_it_skipped_and_why(genuine: KernelHarness, attacker: AttackerServer) -> None:
    forged = [forge_one(forgery, attacker, genuine, name=f"forged-{i}") for i, forgery in enumerate(FORGERIES)]
    try:
        listing = ipymcp_list()
        assert genuine.kernel_id in listing.stdout and "forged" not in listing.stdout
        assert f"Skipped {len(forged)} runtime files that ipymcp does not trust" in listing.stderr
        for path, forgery in zip(forged, FORGERIES, strict=True):
            assert f"{path}: " in listing.stderr and REASONS[forgery] in listing.stderr
        as_json = ipymcp_list("--json")
        assert "forged" not in as_json.stdout and genuine.kernel_id in as_json.stdout
        assert f"Skipped {len(forged)} runtime files" in as_json.stderr  # stdout stays parseable JSON
    finally:
        for path in forged:
            path.unlink()
    assert attacker.received == []


async def test_pinning_the_kernel_id_does_not_let_a_forged_file_with_that_id_through(
    genuine: KernelHarness, attacker: AttackerServer
) -> None:
    forged = forge("zz-forged", attacker.url(), 1, kernel_id=genuine.kernel_id, mode=0o666, owner=NOBODY)
    try:
        async with connect("--kernel-id", genuine.kernel_id) as bridge:
            assert await bridge.run("who") == "'genuine'"
        assert attacker.received == []
    finally:
        forged.unlink()


async def test_the_token_goes_only_to_a_loopback_http_url(genuine: KernelHarness) -> None:
    # Listening on every interface, so "0.0.0.0" reaches it: only the URL rule can stop the bridge.
    wide = AttackerServer(host="0.0.0.0")
    forged = forge("not-loopback", wide.url("0.0.0.0"), os.getpid())
    try:
        async with connect(cwd="/") as bridge:
            assert await bridge.run("who") == "'genuine'"
        assert wide.received == []
        assert f"skipped {forged}" in bridge.stderr and "not a loopback http:// URL" in bridge.stderr
    finally:
        forged.unlink()
        wide.close()


def test_urls_other_than_loopback_http_are_skipped(attacker: AttackerServer) -> None:
    port = attacker.port
    urls = [
        f"http://localhost.attacker.example:{port}/mcp",
        f"https://127.0.0.1:{port}/mcp",
        f"ftp://127.0.0.1:{port}/mcp",
        f"http://user:pw@127.0.0.1:{port}/mcp",
        "http://127.0.0.1/mcp",
        "not a url",
    ]
    forged = [forge(f"url-{i}", url, os.getpid()) for i, url in enumerate(urls)]
    try:
        listing = ipymcp_list("--json")
        assert "url-" not in listing.stdout
        for path, url in zip(forged, urls, strict=True):
            assert f"{path}: its URL {url!r} is not a loopback http:// URL" in listing.stderr
    finally:
        for path in forged:
            path.unlink()


@pytest.mark.parametrize("directory_problem", ["writable by others", "owned by another user"])
async def test_every_file_in_a_runtime_directory_others_control_is_skipped(
    genuine: KernelHarness, attacker: AttackerServer, directory_problem: str
) -> None:
    jupyter_runtime = Path(tempfile.mkdtemp(prefix="shared-runtime-"))
    directory = jupyter_runtime / "ipymcp"
    directory.mkdir()
    forged = forge("planted", attacker.url(), os.getpid(), directory=directory)
    if directory_problem == "writable by others":
        os.chmod(directory, 0o777)
        reason = "mode 0777"
    else:
        if os.geteuid() != 0:
            pytest.skip("making a directory owned by another user needs root")
        os.chown(directory, NOBODY, NOBODY)
        reason = f"owned by uid {NOBODY}"
    env = {"JUPYTER_RUNTIME_DIR": str(jupyter_runtime)}
    async with connect(cwd="/", env=env) as bridge:
        result = await bridge.client.call_tool("execute", {"code": "who"})
        assert result.is_error and "%load_ext ipymcp" in text_of(result)
    assert attacker.received == []
    assert str(directory) in bridge.stderr and reason in bridge.stderr
    listing = ipymcp_list(env=env)
    assert "No kernel has ipymcp loaded" in listing.stdout
    assert str(directory) in listing.stderr and reason in listing.stderr
    assert forged.exists()  # skipped, not deleted: it is not the user's to delete


def test_a_kernel_never_writes_its_token_into_a_directory_another_user_owns(tmp_path: Path) -> None:
    from ipymcp.server import discovery

    if os.geteuid() != 0:
        pytest.skip("making a directory owned by another user needs root")
    directory = tmp_path / "ipymcp"
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY, NOBODY)
    with pytest.raises(PermissionError, match=f"owned by uid {NOBODY}"):
        discovery.write_private_json(directory / "kernel-k.json", {"token": "secret"})
    assert list(directory.iterdir()) == []
    assert os.stat(directory).st_uid == NOBODY


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_file_naming_a_socket_its_own_process_listens_on_is_trusted(host: str) -> None:
    """The positive control for the pid check: the socket table is read right for both families."""
    import socket

    from ipymcp.server import discovery

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} loopback here")
    listener.listen()
    port = listener.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    directory = Path(tempfile.mkdtemp(prefix="own-runtime-"))
    try:
        forge("mine", f"http://{url_host}:{port}/mcp", os.getpid(), directory=directory)
        forge("closed", f"http://{url_host}:{port + 1 if port < 65535 else port - 1}/mcp", os.getpid(), directory=directory)
        skipped: list[Any] = []
        found = discovery.list_kernels(directory, skipped=skipped, warn=False)
        assert [info["kernel_id"] for info in found] == ["mine"]
        assert [item.path.name for item in skipped] == ["kernel-closed.json"]
        assert f"process {os.getpid()} does not listen on" in skipped[0].reason
    finally:
        listener.close()
