"""Load: N concurrent MCP clients x M calls of inspection tools against one kernel, and what that
does to the user's own CPU-bound cell running at the same time.

Phases, all in the same run on the same kernel:
1. the user cell alone (baseline; median of REPEAT runs; its time is measured inside the cell);
2. the flood on an idle kernel: throughput, p50/p95/p99 latency, errors;
3. the flood while the user cell runs, pacing on (the default ``busy_cpu_share``);
4. the same with pacing off (``busy_cpu_share = 0``), to show what the pacer buys.
The slowdown is the cell's median time under the flood against its median time alone.

    .venv/bin/python benchmarks/bench_load.py [--clients 8] [--calls 200]

Writes a markdown table to stdout and to benchmarks/results/load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import KernelHarness, mcp_client  # noqa: E402  (private Jupyter dirs, real kernels)

REPEAT = 8
USER_CELL = """
import time as _t
_t0 = _t.perf_counter()
_s = 0
for _i in range({n}):
    _s += _i * _i
print(_t.perf_counter() - _t0)
"""
CALLS = [
    ("list_variables", {}),
    ("inspect_variable", {"name": "frame"}),
    ("kernel_status", {}),
    ("inspect_variable", {"name": "numbers[:5]"}),
]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def user_cell(kernel: KernelHarness, n: int) -> float:
    return float(kernel.run(USER_CELL.format(n=n), timeout=300)["stdout"].strip())


async def client_loop(
    kernel,
    calls: int | None,
    stop: asyncio.Event,
    latencies: list,
    errors: list,
    go: asyncio.Event | None = None,
) -> None:
    async with mcp_client(kernel.url, kernel.token) as c:
        await c.call_tool("kernel_status", {})  # warm-up (and the SDK's own tools/list)
        i = 0
        while (calls is None and not stop.is_set()) or (calls is not None and i < calls):
            if go is not None and not go.is_set():
                await asyncio.wait(
                    [asyncio.ensure_future(go.wait()), asyncio.ensure_future(stop.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                continue
            name, args = CALLS[i % len(CALLS)]
            started = time.perf_counter()
            try:
                result = await c.call_tool(name, args)
                if result.is_error:
                    errors.append(f"{name}: {result.content[0].text[:100]}")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
            latencies.append(time.perf_counter() - started)
            i += 1


async def flood(kernel, clients: int, calls: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    stop = asyncio.Event()
    started = time.perf_counter()
    await asyncio.gather(*[client_loop(kernel, calls, stop, latencies, errors) for _ in range(clients)])
    wall = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "wall": wall}


async def flood_during_cell(kernel, clients: int, n: int, target=None) -> dict:
    """Alternate the cell alone and the cell under the flood (A B A B …): machine noise hits both.

    ``target``: the kernel the clients hammer (default: the one running the cell). Hammering
    another kernel measures what the flood costs the machine, not this kernel (the control).
    """
    target = target or kernel
    latencies: list[float] = []
    errors: list[str] = []
    stop, go = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.ensure_future(client_loop(target, None, stop, latencies, errors, go)) for _ in range(clients)
    ]
    await asyncio.sleep(1.0)  # clients connected, paused
    alone, loaded, kept, wall = [], [], [], 0.0
    for _ in range(REPEAT):
        alone.append(await asyncio.to_thread(user_cell, kernel, n))
        go.set()
        await asyncio.sleep(0.5)  # hammering
        mark, started = len(latencies), time.perf_counter()
        loaded.append(await asyncio.to_thread(user_cell, kernel, n))
        wall += time.perf_counter() - started
        kept += latencies[mark:]
        go.clear()
        await asyncio.sleep(0.5)  # in-flight calls drain
    stop.set()
    await asyncio.gather(*tasks)
    return {"latencies": kept, "errors": errors, "wall": wall, "cell": loaded, "alone": alone}


def pacer_delayed(kernel) -> float:
    code = "import ipymcp._state as _s; print(_s.runtime.policy.pacer.delayed_s); del _s"
    return float(kernel.run(code)["stdout"])


def set_share(kernel, share: float) -> None:
    kernel.run(f"import ipymcp._state as _s; _s.runtime.policy.pacer.share = {share}; del _s")


def row(label: str, data: dict) -> str:
    lat = [x * 1000 for x in data["latencies"]]
    throughput = len(lat) / data["wall"] if data["wall"] else 0
    slowdown, cell_s = "–", "–"
    if "cell" in data:
        # Each loaded run against the alone run just before it: both saw the same machine noise.
        ratios = [b / a for a, b in zip(data["alone"], data["cell"], strict=True)]
        slowdown = f"{(statistics.median(ratios) - 1) * 100:+.1f} %"
        cell_s = f"{statistics.median(data['cell']):.3f} (alone {statistics.median(data['alone']):.3f})"
    return (
        f"| {label} | {len(lat)} | {throughput:.0f} | {pct(lat, 0.5):.1f} | {pct(lat, 0.95):.1f} | "
        f"{pct(lat, 0.99):.1f} | {len(data['errors'])} | {cell_s} | {slowdown} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--calls", type=int, default=200, help="calls per client in the idle flood")
    parser.add_argument("--cell-iterations", type=int, default=4_000_000)
    args = parser.parse_args()

    kernel, other = KernelHarness(), KernelHarness()
    try:
        for k in (kernel, other):
            k.load_ipymcp()
            k.run(
                "import pandas as pd, numpy as np\nframe = pd.DataFrame(np.random.rand(1000, 8))\n"
                "numbers = list(range(10_000))"
            )
        share = float(
            kernel.run("import ipymcp._state as _s; print(_s.runtime.policy.pacer.share); del _s")["stdout"]
        )
        user_cell(kernel, args.cell_iterations // 10)  # warm-up
        idle = await flood(kernel, args.clients, args.calls)
        noise = await flood_during_cell(kernel, 0, args.cell_iterations)
        delayed_before = pacer_delayed(kernel)
        paced = await flood_during_cell(kernel, args.clients, args.cell_iterations)
        delayed = pacer_delayed(kernel) - delayed_before
        set_share(kernel, 0.0)
        unpaced = await flood_during_cell(kernel, args.clients, args.cell_iterations)
        set_share(kernel, share)
        control = await flood_during_cell(kernel, args.clients, args.cell_iterations, target=other)
        alive = kernel.run("print('ok')")["stdout"].strip() == "ok"
    finally:
        kernel.shutdown()
        other.shutdown()

    lines = [
        f"# Load: {args.clients} clients hammering inspection tools "
        f"({', '.join(sorted({n for n, _ in CALLS}))})",
        "",
        f"User cell: a pure-Python loop of {args.cell_iterations:,} iterations, its time measured inside the "
        f"cell. In each loaded phase the cell runs {REPEAT} times alone and {REPEAT} times under the flood, "
        "alternating (A B A B …) so that noise from other processes hits both; the slowdown is the median "
        "of the ratios loaded / alone-just-before.",
        "",
        "| phase | calls | calls/s | p50 ms | p95 ms | p99 ms | errors | user cell s | cell slowdown |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        row(f"flood, idle kernel ({args.clients} x {args.calls})", idle),
        row("no flood: the same alternation with 0 clients (noise floor)", noise),
        row(f"flood + user cell, pacing on (share {share:g})", paced),
        row("flood + user cell, pacing off", unpaced),
        row("control: the same flood on another kernel", control),
        "",
        "The control row is what the clients themselves cost the machine (its cores are shared by the "
        "client process, the kernels and anything else running); the difference between a row above and "
        "the control is what serving the calls inside the kernel costs the user's cell.",
        "",
        f"Pacing held calls back for {delayed:.1f} s in total during the paced phase. "
        f"Kernel answered a cell after the floods: {alive}.",
    ]
    errors = idle["errors"] + paced["errors"] + unpaced["errors"] + control["errors"]
    if errors:
        lines += ["", "Errors (first 5):", *[f"- {e}" for e in errors[:5]]]
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results" / "load.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
