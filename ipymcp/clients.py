"""Client configuration snippets, shared by ``%mcp config`` and ``ipymcp config``."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

CLIENTS = ("claude-desktop", "claude-code", "vscode", "cursor")


def config_file(client: str) -> Path | None:
    """Where each client keeps its MCP servers (user scope)."""
    home = Path.home()
    return {
        "claude-desktop": home / ".config" / "Claude" / "claude_desktop_config.json",
        "claude-code": home / ".claude.json",
        "vscode": Path(".vscode") / "mcp.json",
        "cursor": home / ".cursor" / "mcp.json",
    }.get(client)


def stdio_entry(connect_args: list[str] | None = None) -> dict:
    """A server entry that runs ``ipymcp connect`` (finds the kernel itself; survives restarts)."""
    return {"command": "ipymcp", "args": ["connect", *(connect_args or [])]}


def stdio_snippet(client: str, connect_args: list[str] | None = None, name: str = "ipymcp") -> str:
    entry = stdio_entry(connect_args)
    if client == "claude-code":
        return "claude mcp add " + shlex.quote(name) + " -- " + shlex.join([entry["command"], *entry["args"]])
    if client == "vscode":
        return json.dumps({"servers": {name: {"type": "stdio", **entry}}}, indent=2)
    _require(client)
    return json.dumps({"mcpServers": {name: entry}}, indent=2)


def http_snippet(client: str, url: str, token: str, name: str = "ipymcp") -> str:
    """Direct HTTP: no bridge process, but the URL and token change when the kernel restarts."""
    header = f"Bearer {token}"
    if client == "claude-code":
        return shlex.join(["claude", "mcp", "add", "--transport", "http", name, url, "--header", f"Authorization: {header}"])
    if client == "vscode":
        return json.dumps(
            {"servers": {name: {"type": "http", "url": url, "headers": {"Authorization": header}}}}, indent=2
        )
    if client == "cursor":
        return json.dumps({"mcpServers": {name: {"url": url, "headers": {"Authorization": header}}}}, indent=2)
    if client == "claude-desktop":
        # Claude Desktop's config file starts stdio servers only: bridge through ipymcp connect.
        return stdio_snippet(client, ["--url", url, "--token", token], name)
    _require(client)
    return ""


def _require(client: str) -> None:
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}; choose one of: {', '.join(CLIENTS)}")
