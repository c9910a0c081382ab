"""``python -m ipymcp.restart comeback|rest``: the detached helpers of a restart (see ``helpers``).

This command line is used across ipymcp releases only within one environment (the kernel starts
the helper from its own interpreter), but it is kept stable anyway: tests/test_restart.py runs it.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .comeback import comeback
    from .endpoint import now
    from .rest import REST_RESTART_DELAY, rest_restart

    parser = argparse.ArgumentParser(prog="python -m ipymcp.restart")
    sub = parser.add_subparsers(dest="command", required=True)
    back = sub.add_parser("comeback", help="load ipymcp in the kernel that replaces pid")
    back.add_argument("--connection-file", required=True)
    back.add_argument("--pid", type=int, required=True)
    back.add_argument("--timeout", type=float, default=90.0)
    rest = sub.add_parser("rest", help="restart a kernel through its Jupyter Server")
    rest.add_argument("--server-file", required=True)
    rest.add_argument("--kernel-id", required=True)
    rest.add_argument("--delay", type=float, default=REST_RESTART_DELAY)
    for p in (back, rest):
        p.add_argument("--log")
    args = parser.parse_args(argv)
    try:
        if args.command == "comeback":
            outcome = comeback(args.connection_file, args.pid, args.timeout)
        else:
            outcome = rest_restart(args.server_file, args.kernel_id, args.delay)
    except Exception as exc:  # noqa: BLE001 - written to the log, nobody else is listening
        outcome = f"failed: {type(exc).__name__}: {exc}"
    if args.log:
        try:
            with open(args.log, "a") as f:
                f.write(f"{now()} {args.command}: {outcome}\n")
        except OSError:
            pass
    return 0 if outcome.startswith("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
