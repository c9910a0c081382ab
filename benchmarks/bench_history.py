"""History capture overhead: what the session.send tap costs a user's cell, and get_history latency.

Three kernels of the same environment side by side: one without ipymcp, one with only the history
tap installed, one with ipymcp loaded (the tap, the stdout router of the execute tool, the server
thread). The same cells alternate between them, REPEAT runs each:
- a cell printing 100,000 short lines;
- a cell displaying 200 PNG images (a 40 kB matplotlib figure, re-encoded each time);
Each run is timed twice: inside the cell (the user's loop) and end to end, from the
execute_request until the kernel is idle with every output delivered to the client.
Then get_history / get_output latency over MCP with those cells in the store.

    .venv/bin/python benchmarks/bench_history.py [--repeat 9]

Writes a markdown table to stdout and to benchmarks/results/history.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import KernelHarness, mcp_client  # noqa: E402  (private Jupyter dirs, real kernels)

PRINT_CELL = """
import time as _t
_t0 = _t.perf_counter()
for _i in range(100_000):
    print(_i, 'short line')
_elapsed = _t.perf_counter() - _t0
"""
IMAGES_CELL = """
import time as _t
_t0 = _t.perf_counter()
for _i in range(200):
    display(Image(data=_png))
_elapsed = _t.perf_counter() - _t0
"""
SETUP = """
import io, matplotlib
matplotlib.use('agg')
import matplotlib.pyplot as plt
from IPython.display import Image, display
_f = plt.figure(figsize=(4, 3)); plt.plot(range(50), [i * i % 17 for i in range(50)])
_b = io.BytesIO(); _f.savefig(_b, format='png'); plt.close(_f)
_png = _b.getvalue()
print(len(_png))
"""


# The capture alone, without the rest of ipymcp (its stdout router, the server thread).
TAP_ONLY = """
from ipymcp.kernel.history import HistoryStore
_store = HistoryStore(get_ipython(), get_ipython().kernel)
_store.install()
"""


# The tap's own cost per message, timed in the kernel on messages shaped like the real ones.
TAP_COST = """
import base64, timeit
_key = next(reversed(_store.cells))
_stream = {"header": {"msg_type": "stream"}, "parent_header": {"msg_id": _key},
           "content": {"name": "stdout", "text": "12345 short line\\n" * 50}}
_display = {"header": {"msg_type": "display_data"}, "parent_header": {"msg_id": _key},
            "content": {"data": {"image/png": base64.b64encode(_png).decode(), "text/plain": "<Image>"},
                        "metadata": {}, "transient": {}}}
_n = 20_000
print(timeit.timeit(lambda: _store._observe(_stream), number=_n) / _n * 1e6,
      timeit.timeit(lambda: _store._observe(_display), number=_n) / _n * 1e6)
"""


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed_cell(kernel: KernelHarness, code: str) -> tuple[float, float]:
    """(seconds inside the cell, seconds end to end with every output received)."""
    started = time.perf_counter()
    reply = kernel.kc.execute_interactive(code, timeout=600, output_hook=lambda m: None, allow_stdin=False)
    end_to_end = time.perf_counter() - started
    assert reply["content"]["status"] == "ok", reply["content"]
    return float(kernel.run("print(_elapsed)")["stdout"]), end_to_end


def row(name: str, with_: list[float], without: list[float]) -> str:
    w50, w95 = pct(with_, 0.5) * 1000, pct(with_, 0.95) * 1000
    b50, b95 = pct(without, 0.5) * 1000, pct(without, 0.95) * 1000
    return f"| {name} | {b50:.1f} / {b95:.1f} | {w50:.1f} / {w95:.1f} | {w50 / b50:.3f}× |"


async def latency(kernel: KernelHarness, tool: str, args: dict, n: int) -> list[float]:
    samples = []
    async with mcp_client(kernel.url, kernel.token) as client:
        for _ in range(3):
            await client.call_tool(tool, args)
        for _ in range(n):
            started = time.perf_counter()
            result = await client.call_tool(tool, args)
            samples.append(time.perf_counter() - started)
            assert not result.is_error, result
    LAST_META[tool] = result.meta or {}
    return samples


LAST_META: dict[str, dict] = {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()

    plain, tapped, loaded = KernelHarness(), KernelHarness(), KernelHarness()
    try:
        loaded.load_ipymcp()
        tapped.run(TAP_ONLY)
        for kernel in (plain, tapped, loaded):
            kernel.run(SETUP)
        results: dict[str, dict[str, list[float]]] = {}
        for label, code in (("print 100,000 lines", PRINT_CELL), ("display 200 PNG images", IMAGES_CELL)):
            for kernel in (plain, tapped, loaded):
                timed_cell(kernel, code)  # warm-up
            runs = {"in": ([], [], []), "e2e": ([], [], [])}
            for _ in range(args.repeat):
                for index, kernel in enumerate((plain, tapped, loaded)):
                    inner, e2e = timed_cell(kernel, code)
                    runs["in"][index].append(inner)
                    runs["e2e"][index].append(e2e)
            results[label] = runs
        stats = loaded.run("import ipymcp._state as _s; print(_s.runtime.history.stats()); del _s")[
            "stdout"
        ].strip()
        images_count = loaded.run(IMAGES_CELL)["execution_count"]
        seen = []
        for code in (PRINT_CELL, IMAGES_CELL):
            before = int(tapped.run("print(_store.messages_seen)")["stdout"])
            tapped.run(code)
            seen.append(int(tapped.run("print(_store.messages_seen)")["stdout"]) - before - 2)
        stream_us, display_us = (float(x) for x in tapped.run(TAP_COST)["stdout"].split())
        history10 = asyncio.run(latency(loaded, "get_history", {"last": 10}, 30))
        history10_text = asyncio.run(
            latency(loaded, "get_history", {"last": 10, "include_outputs": False}, 30)
        )
        output_page = asyncio.run(latency(loaded, "get_output", {"execution_count": images_count}, 30))
        floor = asyncio.run(latency(loaded, "kernel_status", {}, 30))
    finally:
        for kernel in (plain, tapped, loaded):
            kernel.shutdown()

    lines = [
        "| cell | without ipymcp p50 / p95 ms | with p50 / p95 ms | ratio (p50) |",
        "|---|---|---|---|",
    ]
    for label, runs in results.items():
        for what, key in (
            ("the user's loop, timed in the cell", "in"),
            ("end to end, outputs delivered", "e2e"),
        ):
            without = runs[key][0]
            lines.append(row(f"{label}, {what}: history tap only", runs[key][1], without))
            lines.append(row(f"{label}, {what}: ipymcp loaded", runs[key][2], without))
    lines += [
        "",
        "| MCP call (store holds the cells above) | p50 ms | p95 ms |",
        "|---|---|---|",
        f"| get_history(last=10) | {pct(history10, 0.5) * 1000:.1f} | {pct(history10, 0.95) * 1000:.1f} |",
        f"| get_history(last=10, include_outputs=False) | {pct(history10_text, 0.5) * 1000:.1f} | "
        f"{pct(history10_text, 0.95) * 1000:.1f} |",
        f"| get_output(200-image cell, first page) | {pct(output_page, 0.5) * 1000:.1f} | "
        f"{pct(output_page, 0.95) * 1000:.1f} |",
        f"| kernel_status (floor: a trivial tool) | {pct(floor, 0.5) * 1000:.1f} | {pct(floor, 0.95) * 1000:.1f} |",
        "",
        f"- The tap's own work, timed in the kernel: **{stream_us:.2f} µs per stream message**, "
        f"**{display_us:.2f} µs per display_data message** (a PNG bundle). The print cell sent "
        f"{seen[0]} tapped messages (OutStream batches prints), so the tap added about "
        f"{seen[0] * stream_us / 1000:.2f} ms to it; the image cell sent {seen[1]}, about "
        f"{seen[1] * display_us / 1000:.2f} ms. Differences in the table above beyond that are noise "
        "of a shared 2-core machine.",
        f"- {args.repeat} runs per cell per kernel, alternating kernels; one warm-up run each. "
        f"get_output's first page returned {LAST_META['get_output'].get('images_returned')} images "
        f"of {LAST_META['get_output'].get('images')}. Store after the runs: `{stats}`. python {sys.version.split()[0]}, 2 shared cores.",
    ]
    text = "\n".join(lines)
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "history.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
