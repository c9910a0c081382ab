"""Inspection tools on a big namespace: list_variables over 10,000 names and a 2 GB array.

The same rows as benchmarks/run.py's namespace part, alone (a few seconds instead of minutes), with
the SDK floor measured in the same run as the baseline. Run:
    .venv/bin/python benchmarks/bench_namespace.py
"""

from __future__ import annotations

import asyncio

from run import KernelHarness, row, sdk_floor_samples, timed_calls


def main() -> None:
    lines = ["| measure | p50 ms | p95 ms | ratio | target |", "|---|---|---|---|---|"]
    floor = sdk_floor_samples()
    lines.append(row("SDK floor: no-op tool, bare MCPServer (baseline)", floor))
    kernel = KernelHarness()
    try:
        kernel.run("import numpy as np, pandas as pd; frame = pd.DataFrame({'a': range(1000)})")
        kernel.load_ipymcp()
        listed = asyncio.run(timed_calls(kernel.url, kernel.token, "list_variables", {}))
        lines.append(row("list_variables (small namespace)", listed, floor))
        inspected = asyncio.run(timed_calls(kernel.url, kernel.token, "inspect_variable", {"name": "frame"}))
        lines.append(row("inspect_variable(DataFrame)", inspected, floor))
        kernel.run("for _i in range(10_000): globals()[f'v{_i}'] = _i\nbig = np.empty(2_000_000_000 // 8)")
        many = asyncio.run(timed_calls(kernel.url, kernel.token, "list_variables", {}, n=50))
        lines.append(row("list_variables: 10,000 names + 2 GB array (default limit 200)", many, floor, "≤ 50 ms"))
        every = asyncio.run(timed_calls(kernel.url, kernel.token, "list_variables", {"limit": 10_000}, n=30))
        lines.append(row("list_variables: all 10,000 rows returned", every, floor))
    finally:
        kernel.shutdown()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
