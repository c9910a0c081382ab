"""The Jupyter tunnel (ipymcp.remote → kernel websocket → ipymcp.mcp comm), on a real jupyter server.

1. Latency, back to back: tunnel ``execute("1+1")`` against a raw websocket ``execute_request``
   of ``1+1`` over the same server, interleaved call by call (the machine's noise hits both), with
   and without the client's TCP_QUICKACK; for both message types (``ipymcp_msg``, ``comm_msg``).
   Target: tunnel p50 <= 1.5x raw.
2. The user's view while a user cell runs and the agent calls through the tunnel: what
   JupyterLab's kernel indicator shows (its rule: every IOPub ``status`` except those whose parent's
   type is in the page config's ``untracked_message_types``) and the REST ``execution_state``, for
   each message type, with the server's default ``untracked_message_types`` and with
   ``ipymcp_msg`` added to it. This is the measurement behind docs/remote-design.md.

Run: ``.venv/bin/python benchmarks/bench_tunnel.py [N]``; writes benchmarks/results/tunnel.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import KERNEL_NAME  # noqa: E402  (private Jupyter dirs, the test kernel spec)
from real_jupyter import JupyterServer  # noqa: E402
from run import pct  # noqa: E402

from ipymcp.remote import Endpoint, TunnelOptions, connect_kernel  # noqa: E402
from ipymcp.remote.websocket import KernelWebsocket  # noqa: E402
from ipymcp.remote.wire import Message  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
WARMUP = 20
MESSAGE_TYPES = ("ipymcp_msg", "comm_msg")


def execute_content(code: str) -> dict[str, Any]:
    return {"code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}  # fmt: skip


class Notebook:
    """A notebook session on the server, its kernel with ipymcp loaded (no HTTP listener)."""

    def __init__(self, server: JupyterServer, name: str):
        (server.root / name).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
        session = server.api("POST", "/api/sessions", {"path": name, "type": "notebook", "kernel": {"name": KERNEL_NAME}})
        self.server, self.kernel_id = server, session["kernel"]["id"]
        self.endpoint = Endpoint(server.base, token=server.token)

    async def user(self) -> KernelWebsocket:
        return await KernelWebsocket(self.endpoint, self.kernel_id).connect()

    async def load_ipymcp(self) -> None:
        user = await self.user()
        code = "c = get_ipython().config; c.IPyMCP.serve_http = False\n%load_ext ipymcp\n" \
               "import ipymcp._state as _s; assert _s.runtime.wait_ready(60), _s.runtime.state; del _s"  # fmt: skip
        reply = await user.request(user.message("shell", "execute_request", execute_content(code)), 120)
        assert reply.content["status"] == "ok", reply.content
        await user.close()


async def interleaved(notebook: Notebook, quickack: bool) -> dict[str, list[float]]:
    """Back-to-back round trips: one raw execute_request, then one tunnel execute per message type."""
    async with contextlib.AsyncExitStack() as stack:
        raw = await KernelWebsocket(notebook.endpoint, notebook.kernel_id, quickack=quickack).connect()
        stack.push_async_callback(raw.close)

        async def raw_call() -> None:
            reply = await raw.request(raw.message("shell", "execute_request", execute_content("1+1")), 30)
            assert reply.content["status"] == "ok"

        calls = {"raw": raw_call}
        for message_type in MESSAGE_TYPES:
            options = TunnelOptions(quickack=quickack, message_type=message_type)
            kernel = await stack.enter_async_context(connect_kernel(notebook.endpoint, notebook.kernel_id, options))
            calls[message_type] = functools.partial(tunnel_execute, kernel.client)
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for i in range(WARMUP + N):
            for name, call in calls.items():
                started = time.perf_counter()
                await call()
                if i >= WARMUP:
                    samples[name].append(time.perf_counter() - started)
        return samples


async def tunnel_execute(client: Any) -> None:
    result = await client.call_tool("execute", {"code": "1+1"})
    assert not result.is_error, result


async def latency(notebook: Notebook) -> list[str]:
    rows = []
    for quickack in (True, False):
        samples = await interleaved(notebook, quickack)
        base = pct(samples["raw"], 0.5)
        label = "on" if quickack else "off"
        for name, values in samples.items():
            call = "raw websocket execute_request" if name == "raw" else f"tunnel execute, {name}"
            rows.append(
                f"| {call} | {label} | {pct(values, 0.5) * 1000:.2f} | {pct(values, 0.95) * 1000:.2f} "
                f"| {pct(values, 0.5) / base:.2f}× |"
            )
    return rows


class LabIndicator:
    """JupyterLab's kernel indicator rule (packages/services kernel/default.ts), on a websocket."""

    def __init__(self, untracked: list[str]):
        self.untracked = set(untracked)
        self.shown = "unknown"

    def __call__(self, message: Message) -> None:
        if message.channel == "iopub" and message.msg_type == "status":
            if (message.parent_header or {}).get("msg_type") not in self.untracked:
                self.shown = message.content.get("execution_state", self.shown)


async def user_view(notebook: Notebook, untracked: list[str], message_type: str) -> tuple[str, str]:
    """While the user's cell sleeps, 10 agent calls; then what the tab and REST say."""
    browser = await notebook.user()
    indicator = LabIndicator(untracked)
    browser.listeners.append(indicator)
    cell = browser.message("shell", "execute_request", execute_content("import time; time.sleep(6)"))
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(message: Message) -> None:
        if message.msg_type == "execute_input" and message.parent_id == cell.msg_id and not started.done():
            started.set_result(None)

    browser.listeners.append(on_message)
    async with connect_kernel(notebook.endpoint, notebook.kernel_id, TunnelOptions(message_type=message_type)) as kernel:
        reply = asyncio.ensure_future(browser.request(cell, 60))
        await asyncio.wait_for(started, 30)
        for _ in range(10):
            result = await kernel.client.call_tool("list_variables", {})
            assert not result.is_error, result
        await asyncio.sleep(0.3)  # the last status messages reach the tab
        shown = indicator.shown
        rest = notebook.server.api("GET", f"/api/kernels/{notebook.kernel_id}")["execution_state"]
        await reply
    await browser.close()
    return shown, rest


async def views(root: Path) -> list[str]:
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    default = list(MappingKernelManager.class_traits()["untracked_message_types"].default())
    rows = []
    for label, untracked in (("default", default), ("+ ipymcp_msg", [*default, "ipymcp_msg"])):
        args = tuple(f"--MappingKernelManager.untracked_message_types={t}" for t in untracked)
        server_root = root / label.replace(" ", "").replace("+", "plus")
        server_root.mkdir()
        server = JupyterServer(server_root, extra_args=args)
        try:
            notebook = Notebook(server, "view.ipynb")
            await notebook.load_ipymcp()
            for message_type in MESSAGE_TYPES:
                shown, rest = await user_view(notebook, untracked, message_type)
                rows.append(f"| {label} | {message_type} | {shown} | {rest} |")
        finally:
            server.stop()
    return rows


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    (root / "latency").mkdir()
    server = JupyterServer(root / "latency")
    try:
        notebook = Notebook(server, "latency.ipynb")
        await notebook.load_ipymcp()
        latency_rows = await latency(notebook)
    finally:
        server.stop()
    view_rows = await views(root)
    lines = [
        f"# Jupyter tunnel ({N} calls each, interleaved; ms)",
        "",
        "| call | client TCP_QUICKACK | p50 | p95 | ratio to raw p50 |",
        "|---|---|---|---|---|",
        *latency_rows,
        "",
        "While a user cell runs (time.sleep) and the agent makes 10 calls through the tunnel:",
        "",
        "| server untracked_message_types | tunnel message type | JupyterLab indicator shows | REST execution_state |",
        "|---|---|---|---|",
        *view_rows,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "tunnel.md").write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
