"""``%mcp``: status, start/stop, token, client configuration.

Nothing here prints the bearer token: cell outputs are saved with the notebook (ipymcp/tokens.py).
"""

from __future__ import annotations

import logging
import shlex

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import Markdown, display

from . import _state
from .clients import CLIENTS, http_snippet, stdio_snippet
from .policy.permissions import LEVELS

log = logging.getLogger("ipymcp")


@magics_class
class MCPMagics(Magics):
    @magic_arguments()
    @argument(
        "command",
        nargs="?",
        default="status",
        choices=["status", "start", "stop", "token", "config", "permissions", "approve", "log", "share"],
        help="what to do (default: status)",
    )
    @argument(
        "client",
        nargs="?",
        help=f"for config: one of {', '.join(CLIENTS)}; for permissions: {'|'.join(LEVELS)}; "
        "for approve: on|off; for log: how many entries (default 20); for share: on|off",
    )
    @argument("--rotate", action="store_true", help="with token: issue a new token")
    @line_magic
    def mcp(self, line: str = "") -> None:
        """Show or control the MCP server in this kernel.

        %mcp                  status: URL, state, permissions, connected features
        %mcp token            show the bearer token in a dialog (never in the cell's output)
        %mcp config CLIENT    configuration for claude-desktop, claude-code, vscode or cursor
        %mcp stop / start     stop or restart the server (the port changes unless configured)
        %mcp permissions [LEVEL]  show or set what agents may do: read, edit, execute, full
        %mcp approve on|off   ask before each call that runs code or changes files or cells
        %mcp log [N]          the last N tool calls from the audit log
        %mcp token --rotate   new token (not printed either); clients holding the old one are disconnected
        %mcp share on|off     remember in the notebook that it is shared: ipymcp loads when it opens
        """
        args = parse_argstring(self.mcp, line)
        try:
            self._run(args)
        except Exception as exc:  # noqa: BLE001 - a sentence, never a traceback (its locals) in the cell
            from .tokens import scrub

            log.exception("%%mcp %s failed", line)
            runtime = _state.runtime
            text = scrub(f"{type(exc).__name__}: {exc}", runtime) if runtime is not None else type(exc).__name__
            where = f" (details in {runtime.log_file})" if runtime is not None else ""
            print(f"ipymcp: `%mcp {args.command}` failed: {text}{where}.")

    def _run(self, args) -> None:  # noqa: ANN001 - the parsed magic arguments
        command = args.command
        if command == "start":
            runtime = _state.start(self.shell)
            runtime.wait_ready()
            self._status()
        elif command == "stop":
            _state.stop()
            print("ipymcp: server stopped; `%mcp start` starts it again.")
        elif command == "token":
            runtime = self._running()
            if runtime is not None:
                self._token(runtime, args.rotate)
        elif command == "config":
            self._config(args.client)
        elif command == "share":
            self._share(args.client)
        elif command in ("permissions", "approve", "log"):
            runtime = self._running()
            if runtime is not None:
                from .policy import magic

                getattr(magic, command)(runtime, args.client)
        else:
            self._status()

    def _running(self):  # noqa: ANN202
        runtime = _state.runtime
        if runtime is None:
            print("ipymcp: server stopped; `%mcp start` starts it.")
        return runtime

    def _status(self) -> None:
        runtime = self._running()
        if runtime is None:
            return
        runtime.wait_ready(5)
        lines = [
            f"**ipymcp** — {runtime.state}",
            "",
            f"- URL: `{runtime.url}` (also `{runtime.url}/v1`)",
            "- token: not shown here (cell outputs are saved with the notebook); `%mcp token` shows it outside it",
            f"- permissions: `{runtime.policy.level}` (`%mcp permissions LEVEL`); approval: "
            f"{'on' if runtime.policy.approval else 'off'} (`%mcp approve on|off`); audit: `%mcp log`",
            f"- kernel: `{runtime.kernel_id}`; notebook: `{runtime.notebook_path or 'unknown'}`",
            f"- runtime file: `{runtime.runtime_file}`; log: `{runtime.log_file}`",
            "",
            "Client set-up: `%mcp config claude-code` (or claude-desktop, vscode, cursor).",
        ]
        display(Markdown("\n".join(lines)))

    def _token(self, runtime, rotate: bool) -> None:  # noqa: ANN001
        from .tokens import reveal

        if rotate:
            from .policy.magic import rotate_token

            rotate_token(runtime)
            print(
                "ipymcp: token rotated: the old one is refused from now on and its sessions were ended; "
                "`ipymcp connect` picks up the new one by itself."
            )

        def show(text: str):  # noqa: ANN202 - the display's updater
            handle = display(Markdown(text), display_id=True)
            return lambda final: handle.update(Markdown(final))

        reveal(runtime, print, show)

    def _share(self, value: str | None) -> None:
        if value not in ("on", "off"):
            print("usage: %mcp share on|off")
            return
        runtime = self._running()
        if runtime is None:
            return
        import threading

        from .restart.share import share

        handle = display(Markdown(f"ipymcp: share {value} … (asking the notebook view)"), display_id=True)
        threading.Thread(
            target=share,
            args=(runtime, value == "on", lambda text: handle.update(Markdown(text)), _state.stop_sharing),
            name="ipymcp-share",
            daemon=True,
        ).start()

    def _config(self, client: str | None) -> None:
        if client not in CLIENTS:
            print(f"usage: %mcp config CLIENT, with CLIENT one of: {', '.join(CLIENTS)}")
            return
        runtime = self._running()
        if runtime is None:
            return
        runtime.wait_ready(5)
        from .restart.endpoint import endpoint_sentence
        from .tokens import token_command

        # The notebook's path outlives its kernel (reopening the notebook starts a new kernel id).
        pin = ["--notebook", runtime.notebook_path] if runtime.notebook_path else ["--kernel-id", runtime.kernel_id]
        print(f"# {client}: through `ipymcp connect` (finds this kernel, survives restarts)")
        print(f"# (`ipymcp config {client} {shlex.join(pin)} --write` adds it to the config file)")
        print(stdio_snippet(client, pin))
        print()
        print(f"# {client}: direct HTTP. {endpoint_sentence(runtime.config)}")
        print(http_snippet(client, runtime.url, token_command(runtime)))
