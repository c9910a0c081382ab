"""The ``ipymcp`` command: ``connect`` (a stdio proxy to a kernel), ``list``, ``config CLIENT``,
``token`` (the bearer token for direct-HTTP clients: printed here, never in the notebook)."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from typing import Any

from .clients import CLIENTS, stdio_snippet, write_config

SELECTION_HELP = """\
Which kernel: --notebook PATH (path or file name), --kernel-id ID, --url URL --token TOKEN (also
IPYMCP_URL / IPYMCP_TOKEN); otherwise the kernel whose notebook is under the current directory,
else the most recently started one. A notebook on a Jupyter server elsewhere: --server URL (or
SERVER_URL, with TOKEN and NOTEBOOK_PATH; a SERVER_URL ending in /mcp is ipymcp's own URL, as
--url), the token from JUPYTER_TOKEN or --server-token-file."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ipymcp", description="Connect MCP clients to Jupyter kernels that ran `%load_ext ipymcp`."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    connect = commands.add_parser(
        "connect",
        help="serve MCP on stdio, forwarding to a kernel's ipymcp server",
        description="A stdio MCP server for clients that start commands (Claude Desktop, ...). " + SELECTION_HELP,
    )
    _selection_arguments(connect, with_url=True)
    _server_arguments(connect)
    connect.add_argument("-q", "--quiet", action="store_true", help="log warnings only (stderr)")

    listing = commands.add_parser("list", help="list the kernels that have ipymcp loaded")
    listing.add_argument("--json", action="store_true", help="machine-readable output (tokens omitted)")

    token = commands.add_parser(
        "token",
        help="print the bearer token of a kernel's ipymcp server (for direct-HTTP clients)",
        description="Prints only the token, so a client's set-up can read it: "
        '--header "Authorization: Bearer $(ipymcp token --kernel-id ID)". Which kernel: --notebook PATH '
        "(path or file name) or --kernel-id ID (also NOTEBOOK_PATH); otherwise the kernel whose notebook "
        "is under the current directory, else the most recently started one (named on stderr).",
    )
    _selection_arguments(token, with_url=False)

    config = commands.add_parser(
        "config",
        help="print (or --write) a client's MCP configuration for `ipymcp connect`",
        description="The exact entry for CLIENT; --write merges it into the client's config file "
        "(keeping what is there, after a backup).",
    )
    config.add_argument("client", choices=CLIENTS)
    config.add_argument("--write", action="store_true", help="merge into the client's config file (backup first)")
    config.add_argument("--name", default="ipymcp", help="server name in the client (default: ipymcp)")
    config.add_argument("--file", help="config file to write instead of the client's default")
    _selection_arguments(config, with_url=False)

    args = parser.parse_args(argv)
    if args.command == "connect":
        return _connect(args)
    if args.command == "list":
        return _list(args)
    if args.command == "token":
        return _token(args)
    return _config(args)


def _selection_arguments(parser: argparse.ArgumentParser, with_url: bool) -> None:
    parser.add_argument("--notebook", help="the notebook's path or file name")
    parser.add_argument("--kernel-id", help="the kernel id (see `ipymcp list`)")
    if with_url:
        parser.add_argument("--url", help="the server URL, as `%%mcp` shows it (with --token)")
        parser.add_argument("--token", help="the bearer token (`%%mcp token`)")


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "a notebook on a Jupyter server elsewhere (through the kernel's own websocket; README: Remote kernels)"
    )
    group.add_argument("--server", metavar="URL", help="the Jupyter server's base URL, e.g. https://hub.example.org/user/alice/")
    group.add_argument(
        "--server-token-file", metavar="FILE", help="a file holding the Jupyter server's token (else JUPYTER_TOKEN)"
    )
    group.add_argument(
        "--server-token", metavar="TOKEN", help="the Jupyter server's token (visible to others in `ps`: prefer JUPYTER_TOKEN)"
    )
    group.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="an extra HTTP header (proxies); repeatable"
    )
    group.add_argument(
        "--query", action="append", default=[], metavar="NAME=VALUE", help="an extra query parameter (proxies); repeatable"
    )
    group.add_argument("--ca-file", metavar="FILE", help="a CA bundle to trust for https (besides the system's, SSL_CERT_FILE)")
    group.add_argument(
        "--route",
        choices=["auto", "subshell", "control", "shell"],
        help="where the kernel gets the calls (default auto: a subshell of its own, else control, else the main shell)",
    )
    group.add_argument(
        "--framing",
        choices=["auto", "legacy"],
        help="websocket framing (default auto: v1, legacy JSON when the server has no v1; legacy for Colab's proxy)",
    )
    group.add_argument(
        "--message-type",
        choices=["ipymcp_msg", "comm_msg"],
        help="the Jupyter message type of the calls (default ipymcp_msg; comm_msg where the server passes only standard types)",
    )


def _connect(args: argparse.Namespace) -> int:
    import anyio

    from .connect.selection import Selection

    # stdout carries the protocol: everything else goes to stderr (clients keep it in their logs).
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("ipymcp").setLevel(logging.WARNING if args.quiet else logging.INFO)
    selection = Selection.from_env(args.notebook, args.kernel_id, args.url, args.token)
    try:
        endpoint = _remote_endpoint(args)
    except ValueError as exc:  # EndpointError too
        print(f"ipymcp connect: {exc}", file=sys.stderr)
        return 2
    try:
        if endpoint is None:
            from .connect.proxy import run_stdio

            anyio.run(run_stdio, selection)
            return 0
        from .connect import remote

        problem = anyio.run(remote.check_server, endpoint)
        if problem is not None:
            print(f"ipymcp connect: {problem}", file=sys.stderr)
            return 1
        anyio.run(remote.run_stdio, selection, endpoint, _tunnel_options(args))
    except KeyboardInterrupt:
        pass
    return 0


def _remote_endpoint(args: argparse.Namespace) -> Any:
    """The Jupyter server to reach (``--server``, or ``SERVER_URL`` in the seed project's meaning),
    or None for a kernel on this machine. Raises ValueError with the sentence for the user."""
    import os

    from .connect.selection import is_ipymcp_url
    from .remote import Endpoint

    env = os.environ
    url = args.server
    if url and (args.url or args.token):
        raise ValueError("--server is a Jupyter server, --url/--token ipymcp's own URL: give one of them")
    if url is None and not (args.url or env.get("IPYMCP_URL")):
        seed = env.get("SERVER_URL") or ""
        if seed and is_ipymcp_url(seed):
            print(
                "ipymcp connect: note: SERVER_URL ends in /mcp, so it is taken as ipymcp's own URL (with TOKEN as "
                "its bearer token), as before; for a notebook on a Jupyter server, set SERVER_URL to the server's "
                "base URL (or use --server).",
                file=sys.stderr,
            )
        elif seed:
            url = seed
    if url is None:
        if args.server_token or args.server_token_file or args.header or args.query or args.ca_file:
            raise ValueError("--server-token, --server-token-file, --header, --query and --ca-file need --server URL")
        if args.route or args.framing or args.message_type:
            raise ValueError("--route, --framing and --message-type need --server URL")
        return None
    if args.server_token:
        print(
            "ipymcp connect: note: a token on the command line is visible to other users of this machine (`ps`); "
            "prefer JUPYTER_TOKEN or --server-token-file.",
            file=sys.stderr,
        )
    return Endpoint(
        url,
        token=_server_token(args, env),
        headers=dict(_pair(h, ":", "--header NAME:VALUE") for h in args.header),
        query=dict(_pair(q, "=", "--query NAME=VALUE") for q in args.query),
        ca_file=args.ca_file,
    )


def _tunnel_options(args: argparse.Namespace) -> Any:
    from .remote import TunnelOptions

    chosen = {"route": args.route, "framing": args.framing, "message_type": args.message_type}
    return TunnelOptions(restarts_kernel=True, **{name: value for name, value in chosen.items() if value})


def _server_token(args: argparse.Namespace, env: Any) -> str | None:
    if args.server_token_file:
        try:
            with open(args.server_token_file) as file:
                token = file.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the token file {args.server_token_file}: {exc.strerror}") from None
        if not token:
            raise ValueError(f"the token file {args.server_token_file} is empty")
        return token
    return args.server_token or env.get("JUPYTER_TOKEN") or env.get("TOKEN") or None


def _pair(text: str, separator: str, form: str) -> tuple[str, str]:
    name, found, value = text.partition(separator)
    if not found or not name.strip():
        raise ValueError(f"{text.split(separator)[0][:40]!r} is not {form}")
    return name.strip(), value.strip()


def _token(args: argparse.Namespace) -> int:
    import dataclasses

    from .connect.selection import Selection, choose_kernel, describe_kernel
    from .server import discovery

    # The kernel chosen as `connect` chooses it, except a URL and token from the environment:
    # this command exists to read the token of a running kernel, not to echo IPYMCP_TOKEN.
    selection = dataclasses.replace(Selection.from_env(args.notebook, args.kernel_id, None, None), url=None, token=None)
    info, why = choose_kernel(discovery.list_kernels(), selection)
    if info is None or not info.get("token"):
        print(f"ipymcp token: {why}; `ipymcp list` shows the kernels with ipymcp loaded.", file=sys.stderr)
        return 1
    if not (selection.kernel_id or selection.notebook):
        print(f"ipymcp token: {describe_kernel(info)}, chosen because {why}", file=sys.stderr)
    print(info["token"])
    return 0


def _list(args: argparse.Namespace) -> int:
    from .server import discovery

    skipped: list[discovery.SkippedFile] = []
    found = discovery.list_kernels(skipped=skipped, warn=False)
    kernels = [{k: v for k, v in info.items() if k != "token"} for info in found]
    _report_skipped(skipped)
    if args.json:
        print(json.dumps(kernels, indent=1))
        return 0
    if not kernels:
        print(f"No kernel has ipymcp loaded (looked in {discovery.runtime_dir()}). Run `%load_ext ipymcp` in a notebook.")
        return 0
    rows = [("KERNEL ID", "NOTEBOOK", "STARTED", "URL")]
    for info in kernels:
        notebook = info.get("notebook_path") or f"(cwd {info.get('cwd') or '?'})"
        rows.append((info.get("kernel_id") or "?", notebook, _age(info.get("started")), info.get("url") or "?"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + str(row[-1]))
    return 0


def _report_skipped(skipped: list[Any]) -> None:
    """On stderr (stdout stays the listing): how many runtime files were not trusted, and why."""
    untrusted = [item for item in skipped if not item.stale]
    stale = len(skipped) - len(untrusted)
    if untrusted:
        files = "runtime file" if len(untrusted) == 1 else "runtime files"
        print(f"Skipped {len(untrusted)} {files} that ipymcp does not trust:", file=sys.stderr)
        for item in untrusted:
            print(f"  {item}", file=sys.stderr)
    if stale:
        print(f"Ignored {stale} runtime file(s) of kernels that are no longer running.", file=sys.stderr)


def _age(started: Any) -> str:
    try:
        then = _dt.datetime.fromisoformat(str(started))
    except ValueError:
        return "?"
    seconds = int((_dt.datetime.now(_dt.timezone.utc) - then).total_seconds())
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _config(args: argparse.Namespace) -> int:
    from pathlib import Path

    connect_args: list[str] = []
    if args.notebook:
        connect_args += ["--notebook", args.notebook]
    if args.kernel_id:
        connect_args += ["--kernel-id", args.kernel_id]
    if not args.write:
        print(stdio_snippet(args.client, connect_args, args.name))
        return 0
    try:
        path, backup = write_config(args.client, connect_args, args.name, Path(args.file) if args.file else None)
    except (OSError, ValueError) as exc:
        print(f"ipymcp config: {exc}", file=sys.stderr)
        return 1
    print(f"Wrote the {args.name!r} server to {path}" + (f" (previous file saved as {backup})" if backup else ""))
    if args.client == "claude-desktop":
        print("Restart Claude Desktop to load it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
