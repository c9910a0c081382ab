"""Real kernels (jupyter_client) and the real mcp SDK client over real HTTP.

The kernel's interpreter is ``IPYMCP_KERNEL_PYTHON`` (default: this one), so the same tests run
against each kernel environment (``make test`` runs the compat set for ipykernel 6.29 and the
Colab pins too). Jupyter and IPython directories are private to the test session.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="ipymcp-tests-"))
for _var, _sub in (
    ("JUPYTER_RUNTIME_DIR", "runtime"),
    ("JUPYTER_DATA_DIR", "data"),
    ("JUPYTER_CONFIG_DIR", "config"),
    ("IPYTHONDIR", "ipython"),
):
    os.environ[_var] = str(_ROOT / _sub)
    (_ROOT / _sub).mkdir(parents=True, exist_ok=True)
os.environ.pop("IPYMCP_PORT", None)
os.environ.pop("IPYMCP_TOKEN", None)

KERNEL_PYTHON = os.environ.get("IPYMCP_KERNEL_PYTHON") or sys.executable
KERNEL_NAME = "ipymcp-test"
_spec_dir = _ROOT / "data" / "kernels" / KERNEL_NAME
_spec_dir.mkdir(parents=True, exist_ok=True)
(_spec_dir / "kernel.json").write_text(
    json.dumps(
        {
            "argv": [KERNEL_PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "ipymcp test kernel",
            "language": "python",
            "env": {"PYTHONUNBUFFERED": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"},
        }
    )
)


class CellError(AssertionError):
    pass


class KernelHarness:
    """A real kernel plus a client that plays the user's frontend."""

    def __init__(
        self,
        cwd: Path | None = None,
        env: dict[str, str | None] | None = None,
        extra_arguments: list[str] | None = None,
        **popen: Any,
    ):
        """``popen``: passed to the kernel's ``Popen`` (e.g. ``stdout=``/``stderr=`` files, to
        catch anything written to the kernel process's own streams)."""
        from jupyter_client import KernelManager

        self.cwd = cwd or Path(tempfile.mkdtemp(prefix="nb-", dir=_ROOT))
        import uuid

        # Named like Jupyter Server names them, so the kernel id is the connection file's.
        connection_file = _ROOT / "runtime" / f"kernel-{uuid.uuid4()}.json"
        self.km = KernelManager(kernel_name=KERNEL_NAME, connection_file=str(connection_file))
        # A None value removes the variable (e.g. PYTEST_CURRENT_TEST, which turns off ipykernel's
        # capture of fd-level output).
        kernel_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
        self.km.start_kernel(
            cwd=str(self.cwd), env=kernel_env, extra_arguments=extra_arguments or [], **popen
        )
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.url = ""
        self.token = ""

    @property
    def kernel_id(self) -> str:
        return Path(self.km.connection_file).stem.removeprefix("kernel-")

    def run(self, code: str, timeout: float = 60, allow_error: bool = False) -> dict[str, Any]:
        """Execute as the user would; returns {'status', 'outputs', 'stdout', 'execution_count'}.

        A request that arrives just after a failed cell can be aborted unrun: ipykernel before
        6.29.3 keeps aborting for one event-loop turn after the error, with or without ipymcp
        (test_quiet_mode covers ipymcp's own part). It is sent again, as a user would."""
        for _ in range(5):
            outputs: list[dict[str, Any]] = []
            reply = self.kc.execute_interactive(
                code, timeout=timeout, output_hook=outputs.append, allow_stdin=False
            )
            content = reply["content"]
            if content["status"] != "aborted":
                break
            time.sleep(0.2)
        stdout = "".join(
            m["content"]["text"] for m in outputs if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
        )
        if content["status"] != "ok" and not allow_error:
            raise CellError(f"{code!r} failed: {content.get('ename')}: {content.get('evalue')}")
        return {
            "status": content["status"],
            "outputs": outputs,
            "stdout": stdout,
            "execution_count": content.get("execution_count"),
            "reply": reply,
        }

    def send(self, code: str) -> str:
        """Start a user cell without waiting for it; returns the msg id."""
        return self.kc.execute(code)

    def wait_idle(self, msg_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply
        raise TimeoutError(msg_id)

    def load_ipymcp(self, extra: str = "") -> None:
        self.run(f"{extra}\n%load_ext ipymcp")
        info = self.run(
            "import ipymcp._state as _s; assert _s.runtime.wait_ready(30), _s.runtime.state\n"
            "print(_s.runtime.url, _s.runtime.token); del _s"
        )["stdout"].split()
        self.url, self.token = info[0], info[1]

    @asynccontextmanager
    async def client(self, url: str | None = None, token: str | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        async with mcp_client(url or self.url, self.token if token is None else token, **kwargs) as c:
            yield c

    def shutdown(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=False)


@asynccontextmanager
async def mcp_client(url: str, token: str, mode: str = "auto", **kwargs: Any) -> AsyncIterator[Any]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **kwargs) as client:
            yield client


async def answered_by_a_new_kernel(url: str, token: str, old_pid: int, timeout: float = 60) -> dict[str, Any]:
    """Poll the same URL with the same token until a new kernel process answers (after a restart)."""
    import anyio

    with anyio.fail_after(timeout):
        while True:
            try:
                async with mcp_client(url, token) as client:
                    status = (await client.call_tool("kernel_status", {})).structured_content
                if status["pid"] != old_pid:
                    return status
            except Exception:  # noqa: BLE001 - down while the kernel restarts
                pass
            await anyio.sleep(0.3)


async def status_until(client: Any, predicate: Any, timeout: float = 20, pause: float = 0.2) -> dict[str, Any]:
    """Poll kernel_status until `predicate(status)` holds; the status that satisfied it.

    Tests that need a state ("the user's cell is busy", "the agent job is queued") wait for it
    instead of sleeping a guess: a loaded machine can take a while to get there. Polls gently:
    calls made while a user cell runs are CPU-paced.
    """
    import anyio

    with anyio.fail_after(timeout):
        while True:
            status = (await client.call_tool("kernel_status", {})).structured_content
            if predicate(status):
                return status
            await anyio.sleep(pause)


async def user_cell_running(client: Any, fragment: str, timeout: float = 20) -> dict[str, Any]:
    """Wait until the kernel reports a user cell containing `fragment` as running."""
    return await status_until(
        client,
        lambda s: s["state"] == "busy" and fragment in (s.get("user_cell") or {}).get("code_head", ""),
        timeout,
    )


def wait_until_ready(kc: Any, timeout: float = 60) -> None:
    """``kc.wait_for_ready`` for a client without a KernelManager (one made from a connection file).

    Such a client judges "alive" by the heartbeat alone, and one beat missed while a kernel still
    imports on a loaded machine raises "Kernel died before replying to kernel_info". Ask again
    until the deadline instead; a kernel that is really gone still fails then.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            kc.wait_for_ready(timeout=max(1.0, deadline - time.monotonic()))
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture(scope="module")
def kernel() -> Any:
    """One kernel with ipymcp loaded, shared by a test module."""
    harness = KernelHarness()
    harness.load_ipymcp()
    yield harness
    harness.shutdown()


@pytest.fixture
def fresh_kernel() -> Any:
    """A kernel of its own, without ipymcp loaded: for lifecycle tests."""
    harness = KernelHarness()
    yield harness
    harness.shutdown()


def runtime_dir() -> Path:
    return _ROOT / "runtime" / "ipymcp"
