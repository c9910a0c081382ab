"""The Jupyter tunnel (ipymcp.remote → kernel websocket → ipymcp.mcp comm), on real Jupyter servers.

1. **Latency**: tunnel ``execute("1+1")`` against a raw websocket ``execute_request`` of ``1+1``
   over the same server, interleaved call by call (the machine's noise hits both); with and
   without ipymcp's server extension (its ``TCP_NODELAY`` on kernel websockets), with and without
   the client's ``TCP_QUICKACK``, back to back and spaced (a pause between calls, as an agent
   thinking). Target: tunnel p50 <= 1.5x raw.
2. **Reads while a user cell runs** (``time.sleep``): ``list_variables`` through the tunnel, on
   ipykernel 7 (subshell) and ipykernel 6 (control channel, ``.venvs/k6``), direct connection.
   Target: <= 50 ms.
3. **Through a JupyterHub's proxy** (when ``make install-hub-tools`` installed it): the same
   execute comparison and reads while busy, the agent on the hub URL with a token scoped to the
   user's server. Reported, no target.
4. **The user's view** while a user cell runs and the agent calls: what JupyterLab's kernel
   indicator shows (its rule: every IOPub ``status`` except those whose parent's type is in the
   page config's ``untracked_message_types``) and the REST ``execution_state``, for the tunnel's
   message types, with the server's default ``untracked_message_types`` and with ``ipymcp_msg``
   added (what the server extension does). The measurement behind docs/remote-design.md.

Run: ``.venv/bin/python benchmarks/bench_tunnel.py [N]``; writes benchmarks/results/tunnel.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import KERNEL_NAME  # noqa: E402  (private Jupyter dirs, the test kernel spec)
from real_hub import HubUserServer, JupyterHub, missing_tools  # noqa: E402
from real_jupyter import JupyterServer  # noqa: E402
from run import pct  # noqa: E402

from ipymcp.remote import Endpoint, TunnelOptions, connect_kernel  # noqa: E402
from ipymcp.remote.websocket import KernelWebsocket  # noqa: E402
from ipymcp.remote.wire import Message  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
WARMUP = 10
SPACED = 0.2  # seconds between calls when spaced: longer than the 40 ms delayed-ACK timer
READ_TARGET = 0.050
# An agent's occasional reads while a user cell runs: the CPU pacing (c.IPyMCP.busy_cpu_share)
# lets these through at once; back-to-back reads are paced by design (README, "A flood does not
# starve your cell").
READ_SPACING = 1.0
READ_SPACED_N = min(N, 20)
SERVEREXT_OFF = ("--ServerApp.jpserver_extensions=ipymcp.serverext=False",)
K6_PYTHON = REPO / ".venvs" / "k6" / "bin" / "python"
K6_KERNEL = "ipymcp-bench-k6"

Call = Callable[[], Awaitable[None]]


def execute_content(code: str) -> dict[str, Any]:
    return {"code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}  # fmt: skip


def add_k6_kernel_spec() -> bool:
    """A kernel spec for the ipykernel 6 environment beside the test one (same private data dir)."""
    if not K6_PYTHON.exists():
        return False
    spec = Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" / K6_KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [str(K6_PYTHON), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "k6", "language": "python"}))
    return True


class Notebook:
    """A notebook session on a server (``JupyterServer`` or a hub user's), its kernel with ipymcp
    loaded and no HTTP listener."""

    def __init__(self, server: Any, name: str, kernel_name: str = KERNEL_NAME):
        (server.root / name).write_text(
            json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
        )
        session = server.api(
            "POST", "/api/sessions", {"path": name, "type": "notebook", "kernel": {"name": kernel_name}}
        )
        self.server, self.kernel_id = server, session["kernel"]["id"]
        self.endpoint = Endpoint(server.base, token=server.token)

    async def user(self, quickack: bool = True) -> KernelWebsocket:
        return await KernelWebsocket(self.endpoint, self.kernel_id, quickack=quickack).connect()

    async def load_ipymcp(self, config: str = "") -> None:
        user = await self.user()
        code = f"c = get_ipython().config; c.IPyMCP.serve_http = False; {config}\n%load_ext ipymcp\n" \
               "import ipymcp._state as _s; assert _s.runtime.wait_ready(60), _s.runtime.state; del _s"  # fmt: skip
        reply = await user.request(user.message("shell", "execute_request", execute_content(code)), 120)
        assert reply.content["status"] == "ok", reply.content
        await user.close()


def ms(samples: list[float], q: float) -> str:
    return f"{pct(samples, q) * 1000:.1f}"


def ratio(samples: list[float], baseline: list[float]) -> str:
    return f"{pct(samples, 0.5) / pct(baseline, 0.5):.2f}×"


async def interleaved(calls: dict[str, Call], space: float) -> dict[str, list[float]]:
    """Each call in turn, ``N`` rounds after a warm-up; ``space`` seconds before every call."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(WARMUP + N):
        for name, call in calls.items():
            if space:
                await asyncio.sleep(space)
            started = time.perf_counter()
            await call()
            if i >= WARMUP:
                samples[name].append(time.perf_counter() - started)
    return samples


async def raw_vs_tunnel(notebook: Notebook, quickack: bool, space: float) -> dict[str, list[float]]:
    async with contextlib.AsyncExitStack() as stack:
        raw = await notebook.user(quickack)
        stack.push_async_callback(raw.close)
        options = TunnelOptions(quickack=quickack)
        kernel = await stack.enter_async_context(
            connect_kernel(notebook.endpoint, notebook.kernel_id, options)
        )

        async def raw_execute() -> None:
            reply = await raw.request(raw.message("shell", "execute_request", execute_content("1+1")), 30)
            assert reply.content["status"] == "ok"

        async def tunnel_execute() -> None:
            result = await kernel.client.call_tool("execute", {"code": "1+1"})
            assert not result.is_error, result

        return await interleaved({"raw": raw_execute, "tunnel": tunnel_execute}, space)


async def latency_rows(server_label: str, notebook: Notebook, quickacks: tuple[bool, ...]) -> list[str]:
    rows = []
    for quickack in quickacks:
        for pacing, space in (("back to back", 0.0), (f"spaced {SPACED * 1000:.0f} ms", SPACED)):
            samples = await raw_vs_tunnel(notebook, quickack, space)
            raw, tunnel = samples["raw"], samples["tunnel"]
            rows.append(
                f"| {server_label} | {'on' if quickack else 'off'} | {pacing} | {ms(raw, 0.5)} | {ms(raw, 0.95)} "
                f"| {ms(tunnel, 0.5)} | {ms(tunnel, 0.95)} | {ratio(tunnel, raw)} |"
            )
            print(rows[-1], flush=True)
    return rows


class UserCell:
    """The user's cell sleeping on a websocket of its own, interrupted at the end of the block."""

    def __init__(self, notebook: Notebook):
        self.notebook = notebook

    async def __aenter__(self) -> UserCell:
        self.ws = await self.notebook.user()
        cell = self.ws.message("shell", "execute_request", execute_content("import time; time.sleep(600)"))
        running: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_message(message: Message) -> None:
            if (
                message.msg_type == "execute_input"
                and message.parent_id == cell.msg_id
                and not running.done()
            ):
                running.set_result(None)

        self.ws.listeners.append(on_message)
        self.reply = asyncio.ensure_future(self.ws.request(cell, 900))
        await asyncio.wait_for(running, 30)
        return self

    def check_running(self) -> None:
        assert not self.reply.done(), "the user's cell ended during the measurement"

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.ws.request(self.ws.message("control", "interrupt_request", {}), 10)
        await self.reply
        await self.ws.close()


async def reads_while_busy(notebook: Notebook, space: float, n: int) -> tuple[list[float], str]:
    """``list_variables`` while the user's cell sleeps, ``space`` seconds apart; the samples and the route."""
    samples = []
    async with connect_kernel(notebook.endpoint, notebook.kernel_id) as kernel, UserCell(notebook) as cell:
        for i in range(WARMUP + n):
            if space and i:
                await asyncio.sleep(space)
            started = time.perf_counter()
            result = await kernel.client.call_tool("list_variables", {})
            if i >= WARMUP:
                samples.append(time.perf_counter() - started)
            assert not result.is_error, result
            cell.check_running()
        return samples, kernel.route.kind


def read_row(
    label: str, route: str, pacing: str, samples: list[float], baseline: list[float], target: bool
) -> str:
    verdict = (
        f"≤ 50 ms: {'met' if pct(samples, 0.5) <= READ_TARGET else 'MISSED'}" if target else "(reported)"
    )
    return (
        f"| {label} | {route} | {pacing} | {ms(samples, 0.5)} | {ms(samples, 0.95)} | {ratio(samples, baseline)} "
        f"| {verdict} |"
    )


async def read_rows(
    label: str, server: Any, kernel_name: str, baseline: list[float], target: bool
) -> list[str]:
    """Reads while busy on a fresh kernel: the default pacing at an agent's pace (one read per
    ``READ_SPACING`` s), then with pacing off, back to back (what the transport itself costs)."""
    rows = []
    for pacing, config, space, n in (
        (f"default, one read per {READ_SPACING:g} s", "", READ_SPACING, READ_SPACED_N),
        ("off (busy_cpu_share = 0), back to back", "c.IPyMCP.busy_cpu_share = 0", 0.0, N),
    ):
        notebook = Notebook(server, f"busy-{kernel_name}-{len(rows)}.ipynb", kernel_name)
        await notebook.load_ipymcp(config)
        samples, route = await reads_while_busy(notebook, space, n)
        rows.append(read_row(label, route, pacing, samples, baseline, target))
        print(rows[-1], flush=True)
    return rows


async def direct(root: Path) -> tuple[list[str], list[str]]:
    latency, reads = [], []
    for name, label, args in (
        ("on", "with ipymcp.serverext", ()),
        ("off", "without (stock jupyter_server)", SERVEREXT_OFF),
    ):
        (root / name / "root").mkdir(parents=True)
        server = JupyterServer(root / name / "root", extra_args=args)
        try:
            notebook = Notebook(server, "latency.ipynb")
            await notebook.load_ipymcp()
            latency += await latency_rows(label, notebook, (True, False))
            if args:
                continue
            baseline = (await raw_vs_tunnel(notebook, True, 0.0))["raw"]
            kernels = [("ipykernel 7, direct", KERNEL_NAME)]
            if add_k6_kernel_spec():
                kernels.append(("ipykernel 6, direct", K6_KERNEL))
            for kernel_label, kernel_name in kernels:
                reads += await read_rows(kernel_label, server, kernel_name, baseline, target=True)
        finally:
            server.stop()
    return latency, reads


async def through_hub(root: Path) -> tuple[list[str], list[str]]:
    reason = missing_tools()
    if reason:
        return [f"| JupyterHub: not measured ({reason}) | | | | | | | |"], []
    hub = JupyterHub(root)
    try:
        hub.add_user("alice")
        url = hub.start_server("alice")
        alice = HubUserServer(hub, "alice", url, hub.token("alice", ["access:servers!server=alice/"]))
        notebook = Notebook(alice, "hub.ipynb")
        await notebook.load_ipymcp()
        latency = await latency_rows("JupyterHub proxy (with serverext)", notebook, (True,))
        baseline = (await raw_vs_tunnel(notebook, True, 0.0))["raw"]
        reads = await read_rows(
            "ipykernel 7, through the hub's proxy", alice, KERNEL_NAME, baseline, target=False
        )
        return latency, reads
    finally:
        hub.stop()


class LabIndicator:
    """JupyterLab's kernel indicator rule (packages/services kernel/default.ts), on a websocket:
    every IOPub ``status`` whose parent's type is not untracked; counts the flips to idle."""

    def __init__(self, untracked: list[str]):
        self.untracked = set(untracked)
        self.shown = "unknown"
        self.idle_flips = 0

    def __call__(self, message: Message) -> None:
        if message.channel == "iopub" and message.msg_type == "status":
            if (message.parent_header or {}).get("msg_type") not in self.untracked:
                state = message.content.get("execution_state", self.shown)
                self.idle_flips += state == "idle" and self.shown != "idle"
                self.shown = state


async def user_view(notebook: Notebook, untracked: list[str], message_type: str) -> tuple[str, str]:
    """While the user's cell sleeps, 5 agent calls; what the tab showed meanwhile, and what REST says."""
    options = TunnelOptions(message_type=message_type)
    async with UserCell(notebook) as cell:
        indicator = LabIndicator(untracked)
        indicator.shown = "busy"  # the cell runs
        cell.ws.listeners.append(indicator)
        async with connect_kernel(notebook.endpoint, notebook.kernel_id, options) as kernel:
            for _ in range(5):
                result = await kernel.client.call_tool("list_variables", {})
                assert not result.is_error, result
            await asyncio.sleep(0.3)  # the last status messages reach the tab and the server
            rest = notebook.server.api("GET", f"/api/kernels/{notebook.kernel_id}")["execution_state"]
        await asyncio.sleep(0.3)  # the statuses of leaving (subshell deleted, comm closed)
        cell.check_running()
        flips = indicator.idle_flips  # before the interrupt ends the cell
    return ("stays busy" if not flips else f"showed idle {flips}×"), rest


async def views(root: Path) -> list[str]:
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager

    from ipymcp.serverext import UNTRACKED

    default = list(MappingKernelManager.class_traits()["untracked_message_types"].default())
    rows = []
    for name, label, untracked, args in (
        ("default", "default (no server extension)", default, SERVEREXT_OFF),
        ("plus", "+ ipymcp_msg only", [*default, "ipymcp_msg"], SERVEREXT_OFF),
        ("ext", "ipymcp.serverext (+ ipymcp_msg, subshell requests)", [*default, *UNTRACKED], ()),
    ):
        if args:
            args = (*args, *(f"--MappingKernelManager.untracked_message_types={t}" for t in untracked))
        (root / name / "root").mkdir(parents=True)
        server = JupyterServer(root / name / "root", extra_args=args)
        try:
            notebook = Notebook(server, "view.ipynb")
            await notebook.load_ipymcp()
            for message_type in ("ipymcp_msg", "comm_msg"):
                shown, rest = await user_view(notebook, untracked, message_type)
                rows.append(f"| {label} | {message_type} | {shown} | {rest} |")
                print(rows[-1], flush=True)
        finally:
            server.stop()
    return rows


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    latency, reads = await direct(root)
    hub_latency, hub_reads = await through_hub(root / "hub")
    view_rows = await views(root)
    lines = [
        f"# Jupyter tunnel ({N} calls each after {WARMUP} warm-up, raw and tunnel interleaved; ms)",
        "",
        'Tunnel `execute("1+1")` vs a raw websocket `execute_request` of `1+1` on the same kernel and server.',
        "",
        "| server | client TCP_QUICKACK | pacing | raw p50 | raw p95 | tunnel p50 | tunnel p95 | tunnel / raw p50 |",
        "|---|---|---|---|---|---|---|---|",
        *latency,
        *hub_latency,
        "",
        "`list_variables` through the tunnel while a user cell runs (`time.sleep`); ratio to the raw",
        "websocket execute p50 on an idle kernel of the same server:",
        "",
        "| kernel | route | CPU pacing | p50 | p95 | ratio to raw p50 | target |",
        "|---|---|---|---|---|---|---|",
        *reads,
        *hub_reads,
        "",
        "While a user cell runs (time.sleep) and an agent connects, makes 5 calls through the tunnel and",
        "leaves; the indicator follows JupyterLab's rule with the server's untracked list:",
        "",
        "| server untracked_message_types | tunnel message type | JupyterLab indicator | REST execution_state after the calls |",
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
