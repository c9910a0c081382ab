"""Attack: the bearer token must never land in the notebook (issue 11, item 9).

Cell outputs are saved in the ``.ipynb`` and shared with it. A whole session — ``%load_ext``,
``%mcp``, ``%mcp config`` for every client, ``%mcp token``, ``%mcp token --rotate``, agent calls
that print, embed or raise the token (the activity output), error paths — is watched by a second
client on the kernel's IOPub channel (every message any frontend receives), and the notebook a
frontend would save from those messages is written with nbformat: no token, old or new, anywhere.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import KernelHarness, mcp_client, runtime_dir, text_of, wait_until_ready

IPYMCP = [sys.executable, "-m", "ipymcp.cli"]
# Any run of this many characters of a token counts as a leak.
WINDOW = 12


class Frontend:
    """A second client on the kernel: sees every IOPub message, keeps a notebook as JupyterLab would."""

    def __init__(self, kernel: KernelHarness):
        from jupyter_client import BlockingKernelClient

        self.kernel = kernel
        # A client of its own (its own session): km.client() would share the harness's identity.
        self.kc = BlockingKernelClient(connection_file=kernel.km.connection_file)
        self.kc.load_connection_file()
        self.kc.start_channels()
        wait_until_ready(self.kc)
        self.messages: list[dict[str, Any]] = []
        self.cells: list[Any] = []
        self._cell_of: dict[str, Any] = {}
        # The IOPub subscription is live once this client sees a cell's output (ZMQ subscribers join late).
        for _ in range(30):
            msg_id = kernel.kc.execute("print('frontend-probe')")
            try:
                self._drain(until=lambda m, probe=msg_id: m["parent_header"].get("msg_id") == probe and _idle(m), timeout=2)
            except TimeoutError:
                continue
            if any(m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream" for m in self.messages):
                break
        else:
            raise TimeoutError("the second client never received IOPub messages")
        self.messages.clear()

    def run(self, code: str, allow_error: bool = False) -> dict[str, Any]:
        """A user cell, executed by the harness's client and recorded here as a notebook cell."""
        cell = nbformat.v4.new_code_cell(code)
        self.cells.append(cell)
        msg_id = self.kernel.kc.execute(code, allow_stdin=False)
        self._cell_of[msg_id] = cell
        reply = self.kernel.wait_idle(msg_id)
        self._drain(until=lambda m: m["parent_header"].get("msg_id") == msg_id and _idle(m))
        if reply["content"]["status"] != "ok" and not allow_error:
            raise AssertionError(f"{code!r}: {reply['content']}")
        return {"reply": reply, "text": _text(cell)}

    def settle(self, quiet: float = 1.0) -> None:
        """Everything sent so far (the activity output is updated from a thread, coalesced)."""
        self._drain(until=None, quiet=quiet)

    def _drain(self, until: Any, quiet: float = 0.3, timeout: float = 60) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=quiet)
            except queue.Empty:
                if until is None:
                    return
                continue
            self.messages.append(msg)
            self._apply(msg)
            if until is not None and until(msg):
                return
        if until is not None:
            raise TimeoutError("the kernel did not finish the cell")

    def _apply(self, msg: dict[str, Any]) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "update_display_data":
            display_id = content.get("transient", {}).get("display_id")
            for cell in self.cells:
                for output in cell.outputs:
                    if output.get("_display_id") == display_id:
                        output.update(nbformat.v4.output_from_msg(_as_display(msg)))
            return
        cell = self._cell_of.get(msg["parent_header"].get("msg_id"))
        if cell is None or kind not in ("stream", "display_data", "execute_result", "error"):
            return
        output = nbformat.v4.output_from_msg(msg)
        if kind == "display_data" and content.get("transient", {}).get("display_id"):
            output["_display_id"] = content["transient"]["display_id"]
        cell.outputs.append(output)

    def saved_notebook(self, path: Path) -> str:
        for cell in self.cells:
            for output in cell.outputs:
                output.pop("_display_id", None)
        nbformat.write(nbformat.v4.new_notebook(cells=self.cells), path)
        return path.read_text()

    def close(self) -> None:
        self.kc.stop_channels()


def _as_display(msg: dict[str, Any]) -> dict[str, Any]:
    return {**msg, "header": {**msg["header"], "msg_type": "display_data"}}


def _idle(msg: dict[str, Any]) -> bool:
    return msg["msg_type"] == "status" and msg["content"].get("execution_state") == "idle"


def _text(cell: Any) -> str:
    parts = []
    for output in cell.outputs:
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        else:
            data = output.get("data", {})
            parts.append(str(data.get("text/markdown") or data.get("text/plain") or ""))
    return "".join(parts)


def _leaks(text: str, tokens: list[str]) -> list[str]:
    found = []
    for token in tokens:
        windows = {token[i : i + WINDOW] for i in range(len(token) - WINDOW + 1)}
        if any(w in text for w in windows):
            found.append(token[:4] + "…")
    return found


def _runtime_info(kernel: KernelHarness) -> dict[str, Any]:
    return json.loads((runtime_dir() / f"kernel-{kernel.kernel_id}.json").read_text())


def _ipymcp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IPYMCP, *args], capture_output=True, text=True, timeout=60, env=os.environ.copy())


@pytest.mark.compat  # display updates and comm handling differ between ipykernel 6.17, 6.29 and 7
async def test_a_whole_session_never_puts_the_token_in_any_output_or_the_saved_notebook(tmp_path: Path) -> None:
    kernel = KernelHarness()
    frontend = Frontend(kernel)
    try:
        frontend.run("%load_ext ipymcp")
        frontend.run("import ipymcp._state as _s; assert _s.runtime.wait_ready(30); del _s")
        first = _runtime_info(kernel)
        url, token = first["url"], first["token"]

        frontend.run("%mcp")
        configs = {client: frontend.run(f"%mcp config {client}")["text"] for client in
                   ("claude-code", "claude-desktop", "vscode", "cursor")}
        frontend.run("%mcp token")
        shown_cell = frontend.cells[-1]

        async with mcp_client(url, token) as agent:
            reading = "import ipymcp._state as s; print('token is', s.runtime.token)"
            assert token in text_of(await agent.call_tool("execute", {"code": reading}))  # the agent may know it
            await agent.call_tool("execute", {"code": f"leaked = {token!r}\nleaked[:3]"})
            failed = await agent.call_tool("execute", {"code": f"raise ValueError({token!r})"})
            assert failed.is_error
            await agent.call_tool("execute", {"code": "import ipymcp._state as s; s.runtime.token", "mode": "cell"})
            await agent.call_tool("list_variables", {})
            await agent.call_tool("insert_cell", {"source": f"# {token}"})  # no extension: a proposal

        frontend.run("%mcp log")
        for bad in ("%mcp config nope", "%mcp approve maybe", "%mcp permissions sudo", "%mcp log many"):
            frontend.run(bad, allow_error=True)

        frontend.run("%mcp token --rotate")
        rotated_cell = frontend.cells[-1]
        rotated = _runtime_info(kernel)["token"]
        assert rotated != token
        async with mcp_client(url, rotated) as agent:
            await agent.call_tool("execute", {"code": "import ipymcp._state as s; print(s.runtime.token)"})
        frontend.run("%mcp")
        frontend.run("%mcp config vscode")
        frontend.run("%mcp stop")
        frontend.run("%mcp token")  # stopped: an error path
        frontend.settle()

        tokens = [token, rotated]
        everything = json.dumps([m["content"] for m in frontend.messages], default=str)
        assert _leaks(everything, tokens) == [], "a token went out on IOPub"
        saved = frontend.saved_notebook(tmp_path / "session.ipynb")
        assert "Agent activity" in saved and "[token]" in saved  # the activity output was kept, scrubbed
        assert _leaks(saved, tokens) == [], "a token is in the saved notebook"

        # What was shown instead: the command that prints it; the snippets read it from there.
        assert f"token --kernel-id {kernel.kernel_id}" in _text(shown_cell)
        assert "rotated" in _text(rotated_cell) and "token --kernel-id" in _text(rotated_cell)
        assert "${input:ipymcp-token}" in configs["vscode"] and "${env:IPYMCP_TOKEN}" in configs["cursor"]
        assert "ipymcp connect" in configs["claude-desktop"]
    finally:
        frontend.close()
        kernel.shutdown()


@pytest.fixture(scope="module")
def notebook_kernel() -> Any:
    directory = Path(tempfile.mkdtemp(prefix="nb-secrets-"))
    notebook = directory / "secret-session.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), notebook)
    kernel = KernelHarness(cwd=directory, env={"JPY_SESSION_NAME": str(notebook)})
    kernel.run("%load_ext ipymcp")
    kernel.run("import ipymcp._state as _s; assert _s.runtime.wait_ready(30); del _s")
    # No notebook view will connect (a plain client): let ipymcp find that out first.
    kernel.run("import ipymcp._state as _s; assert _s.runtime.frontend.wait_detected(10) == 'no-extension'; del _s")
    kernel.notebook = notebook
    yield kernel
    kernel.shutdown()


def test_the_printed_command_prints_exactly_the_token_and_nothing_else(notebook_kernel: KernelHarness) -> None:
    kernel = notebook_kernel
    token = _runtime_info(kernel)["token"]
    printed = kernel.run("%mcp token")["stdout"]
    assert token not in printed
    command = printed[printed.index("`") + 1 : printed.rindex("`")]
    assert command.split()[1:] == ["token", "--kernel-id", kernel.kernel_id]
    by_id = _ipymcp("token", "--kernel-id", kernel.kernel_id)
    assert (by_id.returncode, by_id.stdout, by_id.stderr) == (0, token + "\n", "")
    by_notebook = _ipymcp("token", "--notebook", kernel.notebook.name)
    assert by_notebook.stdout == token + "\n"
    unknown = _ipymcp("token", "--kernel-id", "no-such-kernel")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "no-such-kernel" in unknown.stderr and "ipymcp list" in unknown.stderr
    # A token in the environment is not what this command reports.
    env = {**os.environ, "IPYMCP_URL": "http://127.0.0.1:1/mcp", "IPYMCP_TOKEN": "stale"}
    pinned = subprocess.run([*IPYMCP, "token", "--kernel-id", kernel.kernel_id], capture_output=True, text=True, env=env)
    assert pinned.stdout == token + "\n"


def test_the_claude_code_line_sends_the_token_when_the_user_runs_it(notebook_kernel: KernelHarness) -> None:
    kernel = notebook_kernel
    token = _runtime_info(kernel)["token"]
    printed = kernel.run("%mcp config claude-code")["stdout"]
    line = next(ln for ln in printed.splitlines() if "--transport http" in ln)
    assert token not in line
    # The real shell runs the line; `claude` is a stand-in that prints the arguments it got.
    ran = subprocess.run(
        ["bash", "-c", 'claude() { printf "%s\\n" "$@"; }\n' + line],
        capture_output=True, text=True, timeout=60,
    )
    args = ran.stdout.splitlines()
    assert args[-1] == f"Authorization: Bearer {token}", ran.stderr
    assert args[:6] == ["mcp", "add", "--transport", "http", "ipymcp", _runtime_info(kernel)["url"]]


def test_mcp_config_tells_when_url_and_token_change(notebook_kernel: KernelHarness) -> None:
    printed = notebook_kernel.run("%mcp config cursor")["stdout"]
    assert "change when the kernel restarts" not in printed
    assert "kept when this kernel restarts" in printed and "port" in printed


def test_stopping_sharing_forgets_the_remembered_endpoint() -> None:
    directory = Path(tempfile.mkdtemp(prefix="nb-share-"))
    notebook = directory / "shared.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), notebook)
    kernel = KernelHarness(cwd=directory, env={"JPY_SESSION_NAME": str(notebook)})
    try:
        kernel.run("%load_ext ipymcp")
        kernel.run("import ipymcp._state as _s; assert _s.runtime.wait_ready(30); del _s")
        token = _runtime_info(kernel)["token"]

        def remembered() -> list[Path]:
            return [p for p in runtime_dir().glob("remember-*.json") if token in p.read_text()]

        assert len(remembered()) == 2  # this kernel's and this notebook's
        kernel.run("%mcp share off")  # no extension here: it stops the server at once
        import time

        deadline = time.monotonic() + 30
        while (runtime_dir() / f"kernel-{kernel.kernel_id}.json").exists() or remembered():
            assert time.monotonic() < deadline, remembered()
            time.sleep(0.1)
        # The next start does not bring the old token back.
        kernel.run("%mcp start")
        assert _runtime_info(kernel)["token"] != token
    finally:
        kernel.shutdown()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, ["kept when this kernel restarts", "still free", "token is kept", "share off"]),
        ({"port": 9999}, ["port is fixed (9999)", "token is kept"]),
        ({"remember_endpoint": False}, ["URL changes at every start", "token changes at every start"]),
        ({"token": "configured-token-0123456789"}, ["token is fixed by your configuration"]),
    ],
)
def test_mcp_config_says_what_a_restart_changes_as_configured(settings: dict[str, Any], expected: list[str]) -> None:
    from ipymcp.config import IPyMCP
    from ipymcp.restart.endpoint import endpoint_sentence

    sentence = endpoint_sentence(IPyMCP(**settings))
    assert all(part in sentence for part in expected), sentence
    assert "configured-token" not in sentence
