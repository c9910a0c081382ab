"""Core benchmarks: latency, scaling, load time, memory. Run with `make bench`.

Every latency is reported with p50/p95 and as a ratio against a baseline measured in the same run:
- the SDK floor: the same mcp client calling a no-op tool of a bare MCPServer in its own process;
- a raw jupyter_client execute of ``1+1`` on the same kernel (what a Jupyter frontend pays).
Writes a markdown table to stdout and to benchmarks/results/core.md.
"""

from __future__ import annotations

import asyncio
import compileall
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import KernelHarness, mcp_client  # noqa: E402  (private Jupyter dirs, real kernels)

N = 200
WARMUP = 20


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def row(name: str, samples: list[float], baseline: list[float] | None = None, target: str = "") -> str:
    p50, p95 = pct(samples, 0.5) * 1000, pct(samples, 0.95) * 1000
    ratio = f"{p50 / (pct(baseline, 0.5) * 1000):.2f}×" if baseline else ""
    return f"| {name} | {p50:.2f} | {p95:.2f} | {ratio} | {target} |"


async def timed_calls(url: str, token: str, tool: str, args: dict, n: int = N) -> list[float]:
    async with mcp_client(url, token) as client:
        for _ in range(WARMUP):
            await client.call_tool(tool, args)
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            result = await client.call_tool(tool, args)
            samples.append(time.perf_counter() - started)
            assert not result.is_error, result
    return samples


def raw_execute_samples(kernel: KernelHarness, n: int = N) -> list[float]:
    for _ in range(WARMUP):
        kernel.kc.execute_interactive("1+1", timeout=10, output_hook=lambda m: None)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        kernel.kc.execute_interactive("1+1", timeout=10, output_hook=lambda m: None)
        samples.append(time.perf_counter() - started)
    return samples


def sdk_floor_samples() -> list[float]:
    server = subprocess.Popen(
        [sys.executable, str(HERE / "sdk_floor_server.py"), "floor-token"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()
        time.sleep(0.3)
        return asyncio.run(timed_calls(url, "floor-token", "noop", {}))
    finally:
        server.terminate()
        server.wait(5)


async def busy_inspection(kernel: KernelHarness) -> list[float]:
    samples = []
    async with mcp_client(kernel.url, kernel.token) as client:
        await client.call_tool("kernel_status", {})
        msg_id = kernel.send("import time; time.sleep(16)")
        await asyncio.sleep(0.3)
        for _ in range(30):
            started = time.perf_counter()
            await client.call_tool("inspect_variable", {"name": "frame"})
            samples.append(time.perf_counter() - started)
            # An agent's pace (a model thinks between calls); a flood is paced on purpose
            # (busy_cpu_share) and measured by bench_load.py.
            await asyncio.sleep(0.5)
        kernel.wait_idle(msg_id)
    return samples


def rss(kernel: KernelHarness) -> int:
    out = kernel.run("print(int(open('/proc/self/statm').read().split()[1]) * __import__('os').sysconf('SC_PAGE_SIZE'))")
    return int(out["stdout"])


def main() -> None:
    # A pip install writes the bytecode; a checkout run with PYTHONDONTWRITEBYTECODE=1 would time
    # compiling ipymcp's sources in every %load_ext instead (~45 ms here).
    compileall.compile_dir(str(HERE.parent / "ipymcp"), quiet=1)
    lines = ["| measure | p50 ms | p95 ms | ratio | target |", "|---|---|---|---|---|"]
    floor = sdk_floor_samples()
    lines.append(row("SDK floor: no-op tool, bare MCPServer (baseline)", floor))

    kernel = KernelHarness()
    try:
        kernel.run("import numpy as np, pandas as pd; frame = pd.DataFrame({'a': range(1000)}); arr = np.arange(100)")
        rss_before = rss(kernel)
        load = kernel.run(
            "import time; _t = time.perf_counter(); get_ipython().run_line_magic('load_ext', 'ipymcp'); "
            "print((time.perf_counter() - _t) * 1000)"
        )
        load_ms = float(load["stdout"].split()[-1])
        kernel.load_ipymcp()
        raw = raw_execute_samples(kernel)
        lines.append(row("raw jupyter_client execute('1+1') (baseline)", raw))
        execute = asyncio.run(timed_calls(kernel.url, kernel.token, "execute", {"code": "1+1"}))
        lines.append(row("ipymcp execute('1+1') vs SDK floor", execute, floor, "≤ 1.5× floor"))
        lines.append(row("ipymcp execute('1+1') vs raw jupyter_client", execute, raw))
        listed = asyncio.run(timed_calls(kernel.url, kernel.token, "list_variables", {}))
        lines.append(row("list_variables (small namespace) vs SDK floor", listed, floor))
        inspected = asyncio.run(timed_calls(kernel.url, kernel.token, "inspect_variable", {"name": "frame"}))
        lines.append(row("inspect_variable(DataFrame) vs SDK floor", inspected, floor))
        busy = asyncio.run(busy_inspection(kernel))
        lines.append(row("inspect_variable while a user cell sleeps (2 calls/s)", busy, floor, "≤ 20 ms"))
        rss_after = rss(kernel)  # before the user's 10,000 variables below, which are theirs

        kernel.run("for _i in range(10_000): globals()[f'v{_i}'] = _i\nbig = np.empty(2_000_000_000 // 8)")
        many = asyncio.run(timed_calls(kernel.url, kernel.token, "list_variables", {}, n=50))
        lines.append(row("list_variables: 10,000 names + 2 GB array (default limit 200)", many, floor, "≤ 50 ms"))
        every = asyncio.run(timed_calls(kernel.url, kernel.token, "list_variables", {"limit": 10_000}, n=30))
        lines.append(row("list_variables: all 10,000 rows returned", every, floor))
        kernel.run("del big")
    finally:
        kernel.shutdown()
    sdk_rss = sdk_import_rss()

    shutdown = shutdown_cost()
    lines += [
        "",
        f"- `%load_ext ipymcp` returned in **{load_ms:.1f} ms** (target ≤ 150 ms; the server comes up on its thread).",
        f"- RSS added by loading ipymcp and serving {N * 4 + 4 * WARMUP + 30} calls: **{(rss_after - rss_before) / 1e6:.1f} MB** "
        f"(target ≤ 40 MB), of which importing the mcp SDK and uvicorn alone is {sdk_rss / 1e6:.1f} MB "
        "(measured in a fresh kernel of the same environment).",
        f"- kernel shutdown: {shutdown[0]:.2f} s with ipymcp vs {shutdown[1]:.2f} s without "
        f"(added {shutdown[0] - shutdown[1]:+.2f} s; target ≤ 1 s).",
        f"- {N} calls per latency row after {WARMUP} warm-up calls; one mcp.Client session per row; "
        f"python {sys.version.split()[0]}.",
    ]
    text = "\n".join(lines)
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "core.md").write_text(text + "\n")


def sdk_import_rss() -> int:
    kernel = KernelHarness()
    try:
        kernel.run("import numpy, pandas")
        before = rss(kernel)
        kernel.run("import mcp.server.mcpserver, mcp.server.streamable_http_manager, uvicorn")
        return rss(kernel) - before
    finally:
        kernel.shutdown()


def shutdown_cost(rounds: int = 3) -> tuple[float, float]:
    def one(load: bool) -> float:
        kernel = KernelHarness()
        if load:
            kernel.load_ipymcp()
        kernel.kc.stop_channels()
        started = time.perf_counter()
        kernel.km.shutdown_kernel(now=False)
        return time.perf_counter() - started

    with_ipymcp = statistics.median(one(True) for _ in range(rounds))
    without = statistics.median(one(False) for _ in range(rounds))
    return with_ipymcp, without


if __name__ == "__main__":
    main()
