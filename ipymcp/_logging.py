"""Server logging goes to a file in the runtime dir, never to the user's cells.

uvicorn, the SDK and our own loggers would otherwise reach ``sys.stderr`` (through the root
logger or Python's last-resort handler), which in a kernel prints into whatever cell ran last.
"""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path

SERVER_LOGGERS = ("ipymcp", "mcp", "mcp_types", "uvicorn", "uvicorn.error", "uvicorn.access", "sse_starlette", "httpx")


def configure(log_file: Path) -> logging.Handler:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(log_file, maxBytes=2_000_000, backupCount=1, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s"))
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        logger.propagate = False
        if not any(isinstance(h, RotatingFileHandler) for h in logger.handlers):
            logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO if name == "ipymcp" else logging.WARNING)
    return handler


def unconfigure(handler: logging.Handler | None) -> None:
    if handler is None:
        return
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if handler in logger.handlers:
            logger.removeHandler(handler)
        if not logger.handlers:  # else Python's last-resort handler would print to stderr
            logger.addHandler(logging.NullHandler())
    handler.close()
