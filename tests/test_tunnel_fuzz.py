"""Bad input through the Jupyter tunnel never hurts: hand-picked hostile comm payloads, a flood,
then hypothesis — as tests/test_fuzz.py does for the HTTP endpoint.

Raw messages on an ``ipymcp.mcp`` comm of a kernel without an HTTP listener, at the ``read``
level (generated tool calls cannot change anything). Every JSON-RPC request gets exactly one
answer, a result or an error with a message; anything else (not JSON-RPC, no id) is dropped
silently; afterwards the session still works and the user's namespace is untouched.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remote_notebook import RawTunnel, RemoteNotebook, module_server

server = module_server("tunnel-fuzz")


@pytest.fixture(scope="module")
async def notebook(server: Any) -> Any:
    nb = RemoteNotebook(server, "fuzz.ipynb")
    await nb.load_ipymcp()
    await nb.run("%mcp permissions read\nprecious = {'user': 'data'}")
    yield nb
    nb.close()


@pytest.fixture
async def raw(notebook: RemoteNotebook) -> Any:
    tunnel = await RawTunnel.open(notebook)
    await tunnel.initialize()
    yield tunnel
    await tunnel.close()


async def still_works(raw: RawTunnel, notebook: RemoteNotebook) -> None:
    reply = await raw.request({"jsonrpc": "2.0", "id": "check", "method": "tools/call",
                               "params": {"name": "inspect_variable", "arguments": {"name": "precious"}}})  # fmt: skip
    assert "result" in reply and not reply["result"].get("isError"), reply
    assert raw.closed is None, raw.closed
    assert (await notebook.run("print(precious)")).strip() == "{'user': 'data'}"


def call(name: str, arguments: Any, id_: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


# Requests (they carry an id): each must get one JSON-RPC error with a message.
HOSTILE_REQUESTS = {
    "unknown method": {"jsonrpc": "2.0", "id": 1, "method": "kernel/pwn", "params": {}},
    "method not a string": {"jsonrpc": "2.0", "id": 1, "method": 5},
    "wrong jsonrpc version": {"jsonrpc": "1.0", "id": 1, "method": "tools/list"},
    "params not an object": {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": [1, 2]},
    "unknown tool": call("rm_rf", {}),
    "arguments not an object": call("inspect_variable", [1, 2]),
    "over the size limit": call("inspect_variable", {"name": "x" * 5_000_000}),
    "above the level": call("execute", {"code": "precious.clear()"}),
    "NUL and lone surrogate": call("inspect_variable", {"name": "pre\x00cious\ud800"}),
    "deeply nested": call("inspect_variable", {"name": nested(500)}),
    "id is an object": {"jsonrpc": "2.0", "id": {"x": 1}, "method": "tools/list"},
    "second initialize": {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
}


@pytest.mark.parametrize("label", list(HOSTILE_REQUESTS))
async def test_hostile_requests_get_one_clean_answer(raw: RawTunnel, notebook: RemoteNotebook, label: str) -> None:
    payload = HOSTILE_REQUESTS[label]
    reply = await raw.request(payload)
    if "error" in reply:
        assert str(reply["error"].get("message", "")).strip(), reply
    else:
        assert reply["result"].get("isError") or label == "id is an object", reply  # a tool error, or listed
    if label == "over the size limit":
        assert "Message too large" in reply["error"]["message"]
    await still_works(raw, notebook)


# Not JSON-RPC requests: no answer is owed; the session must go on.
HOSTILE_DATA = {
    "data not an object": [1, 2, 3],
    "data null": None,
    "jsonrpc a string": {"jsonrpc": "not json-rpc"},
    "jsonrpc a list": {"jsonrpc": [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]},
    "notification with a bad method": {"jsonrpc": {"jsonrpc": "2.0", "method": {"a": 1}}},
    "response to nothing": {"jsonrpc": {"jsonrpc": "2.0", "id": 999, "result": {}}},
    "cancel of nothing": {"jsonrpc": {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}}},
    "hello with extras": {"hello": {"x": 1}, "evil": True},
}


@pytest.mark.parametrize("label", list(HOSTILE_DATA))
@pytest.mark.parametrize("msg_type", ["ipymcp_msg", "comm_msg"])
async def test_hostile_data_is_dropped_and_the_session_goes_on(
    raw: RawTunnel, notebook: RemoteNotebook, label: str, msg_type: str
) -> None:
    await raw.send(HOSTILE_DATA[label], msg_type=msg_type)
    await still_works(raw, notebook)


async def test_a_flood_of_requests_is_bounded_and_each_gets_an_answer(raw: RawTunnel, notebook: RemoteNotebook) -> None:
    payloads = [{"jsonrpc": "2.0", "id": i, "method": "tools/call",
                 "params": {"name": "list_variables", "arguments": {}}} for i in range(400)]  # fmt: skip
    replies = await asyncio.gather(*(raw.request(p, timeout=120) for p in payloads))
    assert len(replies) == 400
    refused = [r for r in replies if "error" in r]
    assert all(r["error"]["message"].strip() for r in refused)
    assert len(refused) < 400  # the session served what it could and refused the rest with a sentence
    await still_works(raw, notebook)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
methods = st.one_of(
    st.sampled_from(["tools/list", "tools/call", "resources/read", "resources/list", "completion/complete",
                     "prompts/list", "ping", "logging/setLevel", "initialize", "subscriptions/listen"]),  # fmt: skip
    st.text(max_size=30),
)


async def test_generated_requests_each_get_one_answer(raw: RawTunnel, notebook: RemoteNotebook) -> None:
    loop = asyncio.get_running_loop()
    ids = itertools.count(1000)

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(method=methods, params=json_values)
    def answered(method: str, params: Any) -> None:
        payload = {"jsonrpc": "2.0", "id": next(ids), "method": method}
        if params is not None:
            payload["params"] = params
        reply = asyncio.run_coroutine_threadsafe(raw.request(payload, timeout=30), loop).result(60)
        assert "result" in reply or str(reply["error"].get("message", "")).strip(), reply

    await asyncio.to_thread(answered)  # hypothesis drives its examples from a thread; the tunnel stays on this loop
    await still_works(raw, notebook)
