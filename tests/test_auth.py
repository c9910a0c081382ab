"""The HTTP gate: bearer token, loopback Host, no browser Origins; both paths, both protocol eras."""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request

import pytest
from conftest import mcp_client, runtime_dir, text_of

pytestmark = pytest.mark.compat

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}


def post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(INITIALIZE).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_request_without_token_is_refused_with_401(kernel):
    assert post(kernel.url, {}) == 401


def test_request_with_wrong_token_is_refused_with_401(kernel):
    assert post(kernel.url, {"Authorization": "Bearer " + "x" * 43}) == 401
    assert post(kernel.url, {"Authorization": kernel.token}) == 401  # missing "Bearer "


def test_request_with_token_is_accepted(kernel):
    assert post(kernel.url, {"Authorization": f"Bearer {kernel.token}"}) == 200


def test_non_loopback_host_is_refused_with_421(kernel):
    assert post(kernel.url, {"Authorization": f"Bearer {kernel.token}", "Host": "evil.example:80"}) == 421
    assert post(kernel.url, {"Host": "evil.example"}) == 421  # before the token check: learns nothing


@pytest.mark.parametrize("origin", ["http://localhost:8888", "http://127.0.0.1:8888", "https://evil.example"])
def test_browser_origins_are_refused_with_403_even_with_the_token(kernel, origin):
    assert post(kernel.url, {"Authorization": f"Bearer {kernel.token}", "Origin": origin}) == 403


def test_token_is_long_and_random(kernel):
    assert len(kernel.token) >= 43  # 32 bytes, url-safe base64
    other = kernel.run("import secrets; print(secrets.token_urlsafe(32))")["stdout"].strip()
    assert other != kernel.token


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize("path", ["/mcp", "/mcp/v1"])
async def test_both_paths_speak_both_protocol_eras(kernel, mode, path):
    url = kernel.url.removesuffix("/mcp") + path
    async with mcp_client(url, kernel.token, mode=mode) as client:
        result = await client.call_tool("execute", {"code": "21 * 2"})
    assert text_of(result).strip() == "42"


def test_runtime_file_is_private_and_describes_the_server(kernel):
    path = runtime_dir() / f"kernel-{kernel.kernel_id}.json"
    info = json.loads(path.read_text())
    assert info["url"] == kernel.url and info["token"] == kernel.token
    assert info["kernel_id"] == kernel.kernel_id
    assert {"pid", "started", "version", "notebook_path"} <= set(info)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_host_then_origin_then_token_one_check_each(kernel):
    """421 before 403 before 401, decided by ipymcp's gate alone (the SDK's own Host/Origin check
    is off: it would repeat ours, after it, with the same lists)."""
    assert post(kernel.url, {"Host": "evil.example:80"}) == 421
    assert post(kernel.url, {"Host": "evil.example:80", "Origin": "https://evil.example"}) == 421
    assert post(kernel.url, {"Origin": "https://evil.example"}) == 403
    assert post(kernel.url, {}) == 401
    sdk_check = kernel.run(
        "import ipymcp._state as _s\n"
        "print(_s.runtime.mcp.session_manager.security_settings.enable_dns_rebinding_protection); del _s"
    )["stdout"].strip()
    assert sdk_check == "False"
