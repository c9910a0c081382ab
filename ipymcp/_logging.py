"""Server logging goes to a file in the runtime dir, never to the user's cells.

uvicorn, the SDK and our own loggers would otherwise reach ``sys.stderr`` (through the root
logger or Python's last-resort handler), which in a kernel prints into whatever cell ran last.
``asyncio``'s logger is the user's: the server loop's errors reach our file through the loop's
own exception handler instead (``server/thread.py``).

``unconfigure`` puts every logger back exactly as ``configure`` found it (handlers, level,
propagate), so unloading ipymcp leaves the user's logging as it was.
"""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

SERVER_LOGGERS = ("ipymcp", "mcp", "mcp_types", "uvicorn", "uvicorn.error", "uvicorn.access", "sse_starlette", "httpx")


class ServerLogHandler(RotatingFileHandler):
    """The file handler, with each logger's state from before it was attached."""

    def __init__(self, log_file: Path):
        super().__init__(log_file, maxBytes=2_000_000, backupCount=1, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s"))
        self.found: dict[str, tuple[int, bool]] = {}


def configure(log_file: Path) -> logging.Handler:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = ServerLogHandler(log_file)
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if any(isinstance(h, ServerLogHandler) for h in logger.handlers):
            continue  # a previous load's handler is still attached: it owns the state to restore
        handler.found[name] = (logger.level, logger.propagate)
        logger.propagate = False
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO if name == "ipymcp" else logging.WARNING)
    return handler


def unconfigure(handler: logging.Handler | None) -> None:
    if handler is None:
        return
    found = getattr(handler, "found", {})
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if handler in logger.handlers:
            logger.removeHandler(handler)
        if name in found:
            level, logger.propagate = found[name]
            logger.setLevel(level)
    handler.close()
