"""Bad input never hurts: hand-picked hostile requests, then hypothesis against every tool, every
resource and completions.

Everything goes through the real HTTP endpoint of a real kernel. The kernel runs at the ``edit``
level; its working directory (the file tools' root) is a fresh directory two levels down in a
scratch directory, with files of its own and sentinel files around it. ``delete_path`` and
``move_path`` are fuzzed too, with paths kept inside the scratch directory *before* the server
sees them (``..`` escapes land on the sentinels, never on the test machine's files), so a bug in
the root confinement shows up as a missing sentinel, not as damage. Tools above ``edit``
(execute, terminal) are still called: they must refuse cleanly.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import string
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import KernelHarness, mcp_client, text_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.exceptions import MCPError
from mcp.types import ResourceTemplateReference

# Tools that delete or move: their path arguments never leave the scratch directory.
PATH_TOOLS = {"delete_path": {"path"}, "move_path": {"src", "dst"}}
SCRATCH = Path(os.path.realpath(tempfile.mkdtemp(prefix="ipymcp-fuzz-")))
ROOT = SCRATCH / "outer" / "root"
SENTINELS = {SCRATCH / "sentinel.txt": "outside the root", SCRATCH / "outer" / "sibling.txt": "next to the root"}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def target():
    (ROOT / "data" / "nested").mkdir(parents=True)
    for path, text in SENTINELS.items():
        path.write_text(text)
    for name in ("data/x.txt", "data/nested/y.txt", "notes.md"):
        (ROOT / name).write_text("fuzz me")
    harness = KernelHarness(cwd=ROOT)
    harness.load_ipymcp("get_ipython().config.IPyMCP.permissions = 'edit'")
    harness.run("precious = {'user': 'data'}")
    yield harness
    harness.shutdown()
    shutil.rmtree(SCRATCH, ignore_errors=True)


def kernel_untouched(kernel: KernelHarness) -> None:
    assert kernel.run("print(precious)")["stdout"].strip() == "{'user': 'data'}"
    assert kernel.run("print(sum(range(10)))")["stdout"].strip() == "45"
    for path, text in SENTINELS.items():
        assert path.read_text() == text, f"{path} was changed from inside the root"


# -- hand-picked hostile requests -----------------------------------------------------------------
async def legacy_session(http: httpx2.AsyncClient, url: str) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "fuzz", "version": "0"},
        },
    }
    response = await http.post(url, json=init)
    assert response.status_code == 200
    headers = {"mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    return headers


def call(name: str, arguments: Any, id_: int = 1) -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": id_,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
    ).encode()


def rpc_result(response: httpx2.Response) -> dict[str, Any]:
    text = response.text
    if text.startswith("event:") or "\ndata:" in text or text.startswith("data:"):
        data = [line[5:] for line in text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])
    return json.loads(text)


HOSTILE_BODIES = {
    "malformed JSON": b'{"jsonrpc": "2.0", "id": 1, "method": ',
    "not an object": b"[1, 2, 3]",
    "invalid UTF-8": b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"\xff\xfe"}}',
    "deeply nested": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"inspect_variable",'
    b'"arguments":{"name":' + b"[" * 50_000 + b"]" * 50_000 + b"}}}",
    "wrong jsonrpc version": b'{"jsonrpc":"1.0","id":1,"method":"tools/list"}',
    "empty body": b"",
}


@pytest.mark.parametrize("label", list(HOSTILE_BODIES))
async def test_hostile_bodies_get_a_clean_json_rpc_error(target, label):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {target.token}", **HEADERS}) as http:
        session = await legacy_session(http, target.url)
        response = await http.post(target.url, content=HOSTILE_BODIES[label], headers=session)
        assert 400 <= response.status_code < 500, response.text[:300]
        assert "error" in rpc_result(response)
        assert response.status_code != 500
    async with target.client() as c:
        assert not (await c.call_tool("kernel_status", {})).is_error
    kernel_untouched(target)


HOSTILE_CALLS = {
    "unknown method": {"jsonrpc": "2.0", "id": 1, "method": "kernel/pwn", "params": {}},
    "unknown tool": json.loads(call("rm_rf", {})),
    "arguments not an object": json.loads(call("inspect_variable", [1, 2])),
    "wrong argument type": json.loads(call("list_variables", {"limit": {"$gt": 1}})),
    "huge string": json.loads(call("inspect_variable", {"name": "x" * 3_000_000})),
    "NUL bytes": json.loads(call("inspect_variable", {"name": "pre\x00cious"})),
    "lone surrogate": {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "inspect_variable", "arguments": {"name": "\ud800"}},
    },
    "unicode path": json.loads(call("read_file", {"path": "ünïcödé/数据/😀.txt"})),
    "NUL in path": json.loads(call("read_file", {"path": "a\x00b.txt"})),
    "path escaping the root": json.loads(call("read_file", {"path": "../../../../etc/passwd"})),
    "execute above the level": json.loads(call("execute", {"code": "precious.clear()"})),
    "null id": {"jsonrpc": "2.0", "id": None, "method": "tools/list"},
}


@pytest.mark.parametrize("label", list(HOSTILE_CALLS))
async def test_hostile_calls_get_a_clean_error_and_change_nothing(target, label):
    async with httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {target.token}", **HEADERS}, timeout=60
    ) as http:
        session = await legacy_session(http, target.url)
        body = json.dumps(HOSTILE_CALLS[label]).encode()  # ensure_ascii: lone surrogates travel as \ud800
        response = await http.post(target.url, content=body, headers=session)
        assert response.status_code < 500, response.text[:300]
        if response.status_code == 200:
            message = rpc_result(response)
            if "result" in message:
                result = message["result"]
                if label != "null id":
                    assert result.get("isError") is True, result
                    text = "".join(block.get("text", "") for block in result["content"])
                    assert text and not text.rstrip().endswith(
                        f"Error executing tool {HOSTILE_CALLS[label]['params']['name']}"
                    )
                    assert "root:x:" not in text
            else:
                assert "error" in message
    async with target.client() as c:
        assert not (await c.call_tool("kernel_status", {})).is_error
    kernel_untouched(target)


# -- hypothesis against every tool ------------------------------------------------------------------
class BackgroundClient:
    """One SDK client on its own event loop, so sync hypothesis tests can drive it."""

    def __init__(self, url: str, token: str):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._stop: asyncio.Event | None = None
        ready: Any = asyncio.run_coroutine_threadsafe(self._open(url, token), self.loop)
        self.client = ready.result(60)

    async def _open(self, url: str, token: str) -> Any:
        opened = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()

        async def hold() -> None:
            async with mcp_client(url, token, cache=None) as client:
                opened.set_result(client)
                await self._stop.wait()

        self._task = asyncio.ensure_future(hold())
        return await opened

    def call(self, name: str, arguments: dict[str, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(self.client.call_tool(name, arguments), self.loop).result(
            timeout
        )

    def request(self, make: Any, timeout: float = 60) -> Any:
        """The answer to ``make(client)``, or the MCPError it raised (a clean JSON-RPC error)."""
        try:
            return asyncio.run_coroutine_threadsafe(make(self.client), self.loop).result(timeout)
        except MCPError as exc:
            return exc

    def list_tools(self) -> Any:
        return asyncio.run_coroutine_threadsafe(self.client.list_tools(), self.loop).result(30)

    def close(self) -> None:
        async def stop() -> None:
            self._stop.set()
            await self._task

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=string.printable, max_size=40),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "..",
            "../../etc/passwd",
            "/etc/shadow",
            "ü/😀/名前.txt",
            "precious",
            "precious['user']",
            "precious.__class__.__init__.__globals__",
            "*",
            "%reset -f",
            "!ls",
            "{}",
            "[0]",
            "-1",
            "\u202e",
            " " * 3,
        ]
    ),
    st.integers(min_value=1000, max_value=200_000).map(lambda n: "x" * n),
)
json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
typed = {
    "string": nasty_text,
    "integer": st.integers(min_value=-(2**70), max_value=2**70),
    "number": st.floats(allow_nan=False, allow_infinity=False),
    "boolean": st.booleans(),
}


def value_for(schema: dict[str, Any]) -> st.SearchStrategy:
    kinds = [schema.get("type")] + [s.get("type") for s in schema.get("anyOf", [])]
    options = [typed[k] for k in kinds if k in typed]
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    options.append(json_value)  # sometimes the wrong type on purpose
    return st.one_of(*options)


def in_scratch(value: Any) -> Any:
    """A path that cannot reach outside the scratch directory even if the root check failed."""
    if not isinstance(value, str):
        return value
    where = os.path.normpath(os.path.join(ROOT, value.replace("\x00", "")))
    return value if where == str(SCRATCH) or where.startswith(f"{SCRATCH}{os.sep}") else "escaped.txt"


scratch_paths = st.one_of(
    nasty_text,
    st.sampled_from(
        ["data/x.txt", "data", "data/nested", "notes.md", ".", "../sibling.txt", "../../sentinel.txt", "../.."]
    ),
    st.sampled_from(list(map(str, SENTINELS)) + [str(ROOT), str(ROOT / "data")]),
).map(in_scratch)


def arguments_for(schema: dict[str, Any], paths: set[str] = frozenset()) -> st.SearchStrategy:
    properties = schema.get("properties", {})
    fields = {
        name: st.one_of(scratch_paths, value_for(spec).map(in_scratch)) if name in paths else value_for(spec)
        for name, spec in properties.items()
    }
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {k: v for k, v in fields.items() if k in required},
        optional={**{k: v for k, v in fields.items() if k not in required}, "unexpected": json_value},
    )


@pytest.fixture(scope="module")
def fuzz_client(target):
    client = BackgroundClient(target.url, target.token)
    yield client
    client.close()


def fuzz_tool(fuzz_client: BackgroundClient, name: str, schema: dict[str, Any], max_examples: int) -> int:
    """Throw generated arguments at one tool; returns how many calls were made."""
    count = 0

    @settings(
        max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(arguments=arguments_for(schema, PATH_TOOLS.get(name, set())))
    def survives(arguments: dict[str, Any]) -> None:
        nonlocal count
        count += 1
        result = fuzz_client.call(name, arguments)  # an exception here = no MCP answer
        if result.is_error:
            text = text_of(result).strip()
            assert text, f"{name}: empty error"
            assert text != f"Error executing tool {name}", f"{name} crashed on {arguments!r}"

    survives()
    return count


def test_every_tool_survives_generated_arguments(target, fuzz_client):
    target.run("%mcp permissions full")  # list everything, then fuzz at 'edit'
    tools = {t.name: t.input_schema for t in fuzz_client.list_tools().tools}
    target.run("%mcp permissions edit")
    assert "execute" in tools and "list_variables" in tools
    fuzzed: dict[str, int] = {}
    for name, schema in sorted(tools.items()):
        started = time.monotonic()
        fuzz_client.call(name, {})
        slow = time.monotonic() - started > 0.5
        fuzzed[name] = fuzz_tool(fuzz_client, name, schema, max_examples=4 if slow else 25)
        assert not fuzz_client.call("kernel_status", {}).is_error, f"server unhealthy after {name}"
    assert set(fuzzed) == set(tools) and set(PATH_TOOLS) <= set(fuzzed)
    assert all(n >= 4 for n in fuzzed.values()), fuzzed
    print("examples per tool:", fuzzed)
    kernel_untouched(target)


resource_uris = st.one_of(
    nasty_text.map(lambda text: f"ipymcp://variables/{text}"),
    nasty_text.map(lambda text: f"ipymcp://history/{text}"),
    st.sampled_from(["ipymcp://history", "ipymcp://variables/precious", "ipymcp://history/1", "ipymcp://"]),
    nasty_text,
)


def answers_cleanly(answer: Any, what: str) -> None:
    """A result, or a JSON-RPC error with a message: never a dropped request or a bare crash."""
    if isinstance(answer, MCPError):
        assert str(answer).strip(), f"{what}: empty error"


def test_every_resource_survives_generated_uris(target, fuzz_client):
    count = 0

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(uri=resource_uris)
    def survives(uri: str) -> None:
        nonlocal count
        count += 1
        answer = fuzz_client.request(lambda c: c.read_resource(uri, cache_mode="bypass"))
        answers_cleanly(answer, uri)

    survives()
    assert count >= 40
    assert not fuzz_client.call("kernel_status", {}).is_error
    kernel_untouched(target)


def test_completions_survive_generated_references_and_arguments(target, fuzz_client):
    count = 0

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        uri=st.one_of(st.just("ipymcp://variables/{name}"), resource_uris),
        name=st.one_of(st.just("name"), nasty_text),
        value=nasty_text,
    )
    def survives(uri: str, name: str, value: str) -> None:
        nonlocal count
        count += 1
        reference = ResourceTemplateReference(type="ref/resource", uri=uri)
        answer = fuzz_client.request(lambda c: c.complete(reference, {"name": name, "value": value}))
        answers_cleanly(answer, f"complete {uri} {name}")

    survives()
    assert count >= 40
    assert not fuzz_client.call("kernel_status", {}).is_error
    kernel_untouched(target)
