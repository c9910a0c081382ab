"""Client configuration: the snippets ``%mcp config`` and ``ipymcp config`` print, and ``--write``.

Every client gets a stdio entry that runs ``ipymcp connect`` (it finds the kernel through the
runtime files, so the entry never changes when a kernel restarts); ``%mcp config`` also prints a
direct-HTTP variant with the current URL, which takes the token from ``ipymcp token`` or an
environment variable (never printed: cell outputs are saved with the notebook).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

CLIENTS = ("claude-desktop", "claude-code", "vscode", "cursor")


def config_file(client: str) -> Path | None:
    """Where each client keeps its MCP servers (user scope; VS Code: this workspace)."""
    home = Path.home()
    if client == "claude-desktop":
        if sys.platform == "darwin":
            return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
        if sys.platform == "win32":
            return Path(os.environ.get("APPDATA", home)) / "Claude" / "claude_desktop_config.json"
        return home / ".config" / "Claude" / "claude_desktop_config.json"
    return {
        "claude-code": home / ".claude.json",
        "vscode": Path(".vscode") / "mcp.json",
        "cursor": home / ".cursor" / "mcp.json",
    }.get(client)


def ipymcp_command() -> str:
    """The ``ipymcp`` script of this Python environment, as an absolute path when it exists.

    GUI clients (Claude Desktop, Cursor) do not see the PATH of the shell or virtualenv where
    ipymcp is installed, so a bare ``ipymcp`` would not be found.
    """
    name = "ipymcp.exe" if sys.platform == "win32" else "ipymcp"
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which("ipymcp") or "ipymcp"


def stdio_entry(connect_args: list[str] | None = None, command: str | None = None) -> dict[str, Any]:
    """A server entry that runs ``ipymcp connect`` (finds the kernel itself; survives restarts)."""
    return {"command": command or ipymcp_command(), "args": ["connect", *(connect_args or [])]}


def client_entry(client: str, connect_args: list[str] | None = None, command: str | None = None) -> dict[str, Any]:
    """The entry exactly as it goes under the server name in ``client``'s config file."""
    _require(client)
    entry = stdio_entry(connect_args, command)
    if client in ("vscode", "claude-code"):
        return {"type": "stdio", **entry}
    return entry


def servers_key(client: str) -> str:
    return "servers" if client == "vscode" else "mcpServers"


def stdio_snippet(
    client: str, connect_args: list[str] | None = None, name: str = "ipymcp", command: str | None = None
) -> str:
    entry = client_entry(client, connect_args, command)
    if client == "claude-code":
        return "claude mcp add " + shlex.quote(name) + " -- " + shlex.join([entry["command"], *entry["args"]])
    return json.dumps({servers_key(client): {name: entry}}, indent=2)


def http_snippet(client: str, url: str, token_command: list[str], name: str = "ipymcp") -> str:
    """Direct HTTP, without the token in it: the snippet is printed into a cell, and cell outputs
    are saved with the notebook. Each client takes the token from where it can: the output of
    ``token_command`` (``ipymcp token --kernel-id …``), a password prompt, or an environment variable."""
    command = shlex.join(token_command)
    if client == "claude-code":
        # The shell runs the command when you run this line; Claude Code keeps the header it gets.
        add = shlex.join(["claude", "mcp", "add", "--transport", "http", name, url, "--header"])
        return f'{add} "Authorization: Bearer $({command})"'
    if client == "vscode":
        # VS Code asks for the token once (a password field) and keeps it in its secret storage.
        prompt = {
            "type": "promptString",
            "id": f"{name}-token",
            "description": f"ipymcp bearer token (in a terminal: {command})",
            "password": True,
        }
        server = {"type": "http", "url": url, "headers": {"Authorization": f"Bearer ${{input:{name}-token}}"}}
        return json.dumps({"inputs": [prompt], "servers": {name: server}}, indent=2)
    if client == "cursor":
        # Cursor substitutes ${env:…} in headers from its own environment.
        entry = {"url": url, "headers": {"Authorization": "Bearer ${env:IPYMCP_TOKEN}"}}
        return (
            f'# start Cursor from a shell where: export IPYMCP_TOKEN="$({command})"\n'
            + json.dumps({"mcpServers": {name: entry}}, indent=2)
        )
    if client == "claude-desktop":
        return (
            "# Claude Desktop's config file starts stdio servers only: use the `ipymcp connect` entry "
            "above (it reads the token from the kernel's runtime file, never from the notebook)."
        )
    _require(client)
    return ""


def write_config(
    client: str,
    connect_args: list[str] | None = None,
    name: str = "ipymcp",
    path: Path | None = None,
    command: str | None = None,
) -> tuple[Path, Path | None]:
    """Merge the ``ipymcp connect`` entry into the client's config file, keeping everything else.

    The previous file is copied to ``<file>.bak-<timestamp>`` first. Returns (file, backup or None
    when there was no file). Refuses (ValueError) to touch a file that is not a JSON object, so a
    hand-edited file with comments is never clobbered.
    """
    path = path or config_file(client)
    if path is None:
        _require(client)
        raise ValueError(f"no known config file for {client}")
    data: dict[str, Any] = {}
    backup = None
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if text.strip():
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ValueError(
                    f"{path} is not plain JSON ({exc}); add the entry by hand: `ipymcp config {client}` prints it"
                ) from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a JSON object; add the entry by hand")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        shutil.copy2(path, backup)
    servers = data.setdefault(servers_key(client), {})
    if not isinstance(servers, dict):
        raise ValueError(f"{path}: {servers_key(client)!r} is not an object; fix it by hand")
    servers[name] = client_entry(client, connect_args, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if path.exists():
        shutil.copymode(path, tmp)
    os.replace(tmp, path)
    return path, backup


def _require(client: str) -> None:
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}; choose one of: {', '.join(CLIENTS)}")
