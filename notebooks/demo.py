"""`make demo`: a real kernel, ipymcp loaded in it, and a scripted MCP client session.

The "user" is a jupyter_client connection running cells, as a notebook frontend would; the
"agent" is the mcp SDK's Client over streamable HTTP with the bearer token. Every call and a
short form of its result is printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="ipymcp-demo-"))
for var in ("JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
    os.environ[var] = str(WORK / var.lower())


def say(who: str, text: str) -> None:
    print(f"\n\033[1m{who}\033[0m {text}")


def show(result) -> None:  # noqa: ANN001
    for block in result.content:
        if block.type == "text":
            print(textwrap.indent(block.text.rstrip()[:1500], "    "))
        elif block.type == "image":
            print(f"    [image {block.mime_type}, {len(block.data) * 3 // 4:,} bytes]")
    if result.structured_content and not result.content:
        print(textwrap.indent(json.dumps(result.structured_content, indent=1)[:1500], "    "))
    if result.is_error:
        print("    (tool error)")


class User:
    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(WORK))

    def run(self, code: str) -> str:
        say("user cell>", code.replace("\n", "\n           "))
        out: list[str] = []

        def hook(msg: dict) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                out.append(content["text"])
            elif msg["msg_type"] in ("execute_result", "display_data", "update_display_data"):
                out.append(content["data"].get("text/plain", "") + "\n")
            elif msg["msg_type"] == "error":
                out.append(f"{content['ename']}: {content['evalue']}\n")

        self.kc.execute_interactive(code, timeout=60, output_hook=hook)
        text = "".join(out)
        if text:
            print(textwrap.indent(text.rstrip(), "    "))
        return text


async def agent(url: str, token: str, user: User) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = (await client.list_tools()).tools
            say("agent>", f"list_tools -> {len(tools)} tools: {', '.join(t.name for t in tools)}")
            names = {t.name for t in tools}

            async def call(tool: str, args: dict | None = None, **kw) -> object:  # noqa: ANN003
                say("agent>", f"{tool}({', '.join(f'{k}={v!r}' for k, v in (args or {}).items())})")
                started = time.perf_counter()
                result = await client.call_tool(tool, args or {}, **kw)
                show(result)
                print(f"    ({(time.perf_counter() - started) * 1000:.1f} ms)")
                return result

            await call("list_variables")
            await call("inspect_variable", {"name": "sales"})
            await call("inspect_variable", {"name": "config['lr']"})
            await call("execute", {"code": "sales.groupby('region')['amount'].sum()"})
            await call(
                "execute",
                {"code": "import matplotlib.pyplot as plt\nsales.plot.bar(x='region', y='amount')\nplt.show()"},
            )
            await call("execute", {"code": "undefined_name + 1"})

            say("demo:", "the user starts a long cell; the agent keeps working")
            msg_id = user.kc.execute("import time\nfor step in range(4):\n    time.sleep(1)")
            await asyncio.sleep(0.5)
            await call("kernel_status")
            await call("inspect_variable", {"name": "sales"})

            async def progress(value: float, total: float | None, message: str | None) -> None:
                print(f"    progress: {message}")

            await call("execute", {"code": "'ran after the user cell'"}, progress_callback=progress)
            while user.kc.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != msg_id:
                pass
            await call("execute", {"code": "while True: pass", "timeout": 1})
            if "get_history" in names:
                await call("get_history", {"last": 3, "include_outputs": True})
            if "list_files" in names:
                await call("list_files", {})
            if "run_command" in names:
                await call("run_command", {"command": "python --version"})
            if "read_notebook" in names:
                await call("read_notebook", {"limit": 2})


def main() -> None:
    user = User()
    try:
        user.run("%load_ext ipymcp")
        user.run(
            "import pandas as pd\n"
            "sales = pd.DataFrame({'region': ['north', 'south', 'east', 'west'], 'amount': [120, 80, 95, 143]})\n"
            "config = {'lr': 3e-4, 'epochs': 10}"
        )
        info = user.run("import ipymcp._state as _s; _s.runtime.wait_ready(); print(_s.runtime.url, _s.runtime.token)")
        url, token = info.strip().splitlines()[-1].split()[:2]
        asyncio.run(agent(url, token, user))
        user.run("print('user cell after the agent session:', sales.shape)")
        say("demo:", "done; shutting the kernel down")
    finally:
        user.kc.stop_channels()
        user.km.shutdown_kernel(now=False)


if __name__ == "__main__":
    sys.exit(main())
