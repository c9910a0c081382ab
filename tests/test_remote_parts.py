"""The remote client's pure parts: Jupyter websocket framing, endpoints (no server needed); and TLS
against a real ``jupyter server`` serving https with a certificate from a CA of the test's own."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from conftest import KERNEL_NAME
from real_jupyter import start_https_server

from ipymcp.remote import Endpoint, EndpointError, ServerAPI, ServerError
from ipymcp.remote.websocket import KernelConnectionError, KernelWebsocket
from ipymcp.remote.wire import V1_PROTOCOL, WireError, decode, encode, new_message

# -- framing -------------------------------------------------------------------------------------


def test_v1_and_legacy_frames_round_trip_a_message() -> None:
    message = new_message("shell", "ipymcp_msg", {"comm_id": "c", "data": {"jsonrpc": {"id": 1}}}, "sess", subshell_id="s1")
    for subprotocol in (V1_PROTOCOL, None):
        back = decode(encode(message, subprotocol), subprotocol)
        assert (back.channel, back.header, back.content) == ("shell", message.header, message.content)
    assert message.header["subshell_id"] == "s1" and message.header["session"] == "sess"


def test_a_v1_frame_matches_jupyter_servers_own_serializer() -> None:
    from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1

    message = new_message("control", "kernel_info_request", {}, "sess")
    channel, parts = deserialize_msg_from_ws_v1(encode(message, V1_PROTOCOL))
    assert channel == "control" and json.loads(parts[0]) == message.header and json.loads(parts[3]) == {}


def test_a_legacy_binary_frame_with_buffers_is_read() -> None:
    from jupyter_server.services.kernels.connection.base import serialize_binary_message

    body = {"channel": "iopub", "header": {"msg_id": "m", "msg_type": "comm_msg"}, "parent_header": {},
            "metadata": {}, "content": {"comm_id": "c"}, "buffers": [b"\x00\x01"]}  # fmt: skip
    back = decode(serialize_binary_message(body), None)
    assert back.msg_type == "comm_msg" and back.buffers == [b"\x00\x01"]


@pytest.mark.parametrize(
    "frame, subprotocol",
    [(b"\x00" * 3, V1_PROTOCOL), ((9).to_bytes(8, "little") + b"\x00" * 8, V1_PROTOCOL), ("{}", V1_PROTOCOL),
     ("not json", None), ("[1, 2]", None), (struct.pack("!I", 5) + b"xx", None)],  # fmt: skip
)
def test_frames_that_are_not_messages_raise_wire_error(frame: Any, subprotocol: str | None) -> None:
    with pytest.raises(WireError):
        decode(frame, subprotocol)


# -- endpoints -----------------------------------------------------------------------------------


def test_an_endpoint_keeps_its_token_and_proxy_query_out_of_sight() -> None:
    endpoint = Endpoint("https://hub.example.org/user/alice?proxy-token=p1", token="t0ps3cret", headers={"X-A": "b"})
    assert endpoint.base_url == "https://hub.example.org/user/alice/"
    assert "t0ps3cret" not in repr(endpoint) and "p1" not in repr(endpoint) and "p1" not in endpoint.display_url
    assert endpoint.request_headers() == {"X-A": "b", "Authorization": "token t0ps3cret"}
    url = endpoint.websocket_url("api/kernels/k/channels", session_id="s")
    assert url == "wss://hub.example.org/user/alice/api/kernels/k/channels?session_id=s&proxy-token=p1"
    assert Endpoint("http://127.0.0.1:8888").websocket_url("api/x").startswith("ws://127.0.0.1:8888/api/x?")


@pytest.mark.parametrize(
    "url, says",
    [("ftp://host/", "not a Jupyter server URL"), ("hub.example.org", "not a Jupyter server URL"),
     ("https://alice:s3cr3t@hub/", "not in the URL")],  # fmt: skip
)
def test_unusable_urls_are_refused_with_a_sentence(url: str, says: str) -> None:
    with pytest.raises(EndpointError, match=says) as refused:
        Endpoint(url)
    assert "s3cr3t" not in str(refused.value)


def test_a_missing_ca_file_is_refused() -> None:
    with pytest.raises(EndpointError, match="does not exist"):
        Endpoint("https://hub/", ca_file="/nonexistent/ca.pem")


# -- TLS against a real server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server, ca = start_https_server(tmp_path_factory.mktemp("tls"))
    yield server, ca
    server.stop()


async def test_tls_is_verified_and_a_ca_file_makes_the_server_trusted(https_server: Any) -> None:
    server, ca = https_server
    url = server.base
    async with ServerAPI(Endpoint(url, token=server.token)) as api:
        with pytest.raises(ServerError, match="not trusted.*--ca-file"):
            await api.status()
    with pytest.raises(KernelConnectionError, match="not trusted"):
        await KernelWebsocket(Endpoint(url, token=server.token), "no-such-kernel").connect()

    trusted = Endpoint(url, token=server.token, ca_file=str(ca))
    async with ServerAPI(trusted) as api:
        assert "started" in await api.status()
    with pytest.raises(KernelConnectionError, match="does not exist"):  # TLS passed; the server answered 404
        await KernelWebsocket(trusted, "no-such-kernel").connect()


async def test_the_rest_helpers_find_a_notebooks_kernel_and_restart_it(https_server: Any) -> None:
    server, ca = https_server
    (server.root / "rest.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    session = server.api("POST", "/api/sessions", {"path": "rest.ipynb", "type": "notebook", "kernel": {"name": KERNEL_NAME}})
    kernel_id = session["kernel"]["id"]
    endpoint = Endpoint(server.base, token=server.token, ca_file=str(ca))
    async with ServerAPI(endpoint) as api:
        found = [s for s in await api.sessions() if s["path"] == "rest.ipynb"]
        assert [s["kernel"]["id"] for s in found] == [kernel_id]
        assert (await api.kernel(kernel_id))["id"] == kernel_id
        assert await api.kernel("no-such-kernel") is None
        restarted = await api.restart_kernel(kernel_id)
        assert restarted["id"] == kernel_id
        with pytest.raises(ServerError, match="does not exist"):
            await api.restart_kernel("no-such-kernel")
    async with ServerAPI(Endpoint(server.base, token="wrong", ca_file=str(ca))) as api:
        with pytest.raises(ServerError, match="refused the token") as refused:
            await api.sessions()
    assert "wrong" not in str(refused.value)
    server.api("DELETE", f"/api/sessions/{session['id']}")
