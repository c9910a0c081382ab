"""The audit log: one JSON line per tool call, in a private per-kernel file next to the runtime file.

Lines are queued and written by a small daemon thread, so a slow disk never stalls the server's
event loop. The file is created with mode 0600, rotates by size (one backup, ``.1``), and never
contains the bearer token: the current token is scrubbed from every line as a last guard.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("ipymcp.audit")

# Arguments whose value is a program: kept in full (up to FULL_LIMIT), that is what a reviewer needs.
FULL_ARGUMENTS = frozenset({"code", "command", "cmd", "script", "source", "input", "keys", "pattern", "path"})
# Arguments that carry file or cell payloads: summarised as size + hash.
PAYLOAD_ARGUMENTS = frozenset(
    {
        "content",
        "contents",
        "data",
        "body",
        "text",
        "new_text",
        "old_text",
        "new_content",
        "base64",
        "bytes",
        "patch",
    }
)
FULL_LIMIT = 100_000
OTHER_LIMIT = 2_000
OUTCOME_LIMIT = 300


def summarise(value: str | bytes) -> dict[str, Any]:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()[:16]}


def audit_arguments(arguments: Any) -> Any:
    """What the log keeps of a call's arguments: programs in full, payloads as size + hash."""
    if not isinstance(arguments, dict):
        return _bounded(arguments, OTHER_LIMIT)
    kept: dict[str, Any] = {}
    for key, value in arguments.items():
        name = str(key)
        if isinstance(value, (str, bytes)) and name.lower() in PAYLOAD_ARGUMENTS:
            kept[name] = summarise(value)
        elif isinstance(value, str) and name.lower() in FULL_ARGUMENTS:
            kept[name] = (
                value if len(value) <= FULL_LIMIT else {"head": value[:FULL_LIMIT], **summarise(value)}
            )
        else:
            kept[name] = _bounded(value, OTHER_LIMIT)
    return kept


def _bounded(value: Any, limit: int, depth: int = 0) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else {"head": value[:200], **summarise(value)}
    if isinstance(value, bytes):
        return summarise(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if depth > 4:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k): _bounded(v, limit, depth + 1) for k, v in items[:50]}
        if len(items) > 50:
            out["…"] = f"{len(items) - 50} more keys"
        return out
    if isinstance(value, (list, tuple)):
        out_list = [_bounded(v, limit, depth + 1) for v in value[:50]]
        if len(value) > 50:
            out_list.append(f"… {len(value) - 50} more items")
        return out_list
    return _bounded(repr(value), limit, depth + 1)


class AuditLog:
    """Append-only JSON lines; ``record`` is cheap and thread-safe (a queue put)."""

    def __init__(self, path: Path, max_bytes: int, secrets: Callable[[], Iterable[str]] = tuple):
        self.path = Path(path)
        self.max_bytes = max(10_000, int(max_bytes))
        self._secrets = secrets
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._flushed = threading.Condition()
        self._pending = 0
        self._closed = False

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_loop, name="ipymcp-audit", daemon=True)
                self._thread.start()

    def record(self, entry: dict[str, Any]) -> None:
        entry.setdefault("time", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"))
        if self._closed:  # calls finishing while the server stops: write directly
            with self._flushed:
                self._pending += 1
            self._write([entry])
            return
        with self._flushed:
            self._pending += 1
        self._queue.put(entry)
        if self._thread is None:
            self.start()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until every recorded entry is on disk."""
        with self._flushed:
            return self._flushed.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 2.0) -> None:
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            self._thread = None

    # -- writer thread -----------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            batch = [entry]
            while True:  # drain what is already queued: one write per burst
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write(batch)
                    return
                batch.append(more)
            self._write(batch)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        try:
            lines = "".join(self._line(entry) for entry in batch)
            self._rotate_if_needed(len(lines))
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(lines)
        except Exception:  # noqa: BLE001 - the log must never take the server down
            log.exception("audit write failed")
        finally:
            with self._flushed:
                self._pending -= len(batch)
                self._flushed.notify_all()

    def _line(self, entry: dict[str, Any]) -> str:
        text = json.dumps(entry, ensure_ascii=False, default=repr)
        for secret in self._secrets():
            if secret and secret in text:
                text = text.replace(secret, "[token]")
        # Lone surrogates (invalid UTF-8 sent by a client) must not break the write.
        return text.encode("utf-8", "backslashreplace").decode("utf-8") + "\n"

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return
        if size + incoming > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))

    # -- reading -----------------------------------------------------------------------------
    def recent(self, n: int) -> list[dict[str, Any]]:
        self.flush()
        entries: list[dict[str, Any]] = []
        for path in (self.path, self.path.with_name(self.path.name + ".1")):
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                continue
            for line in reversed(lines):
                if len(entries) >= n:
                    break
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
            if len(entries) >= n:
                break
        entries.reverse()
        return entries


def render_table(entries: list[dict[str, Any]]) -> str:
    """Markdown table of audit entries for ``%mcp log``."""
    if not entries:
        return "_No tool calls recorded yet._"
    rows = [
        "| time | client | tool | arguments | ms | outcome | approval |",
        "|---|---|---|---|---:|---|---|",
    ]
    for e in entries:
        time = str(e.get("time", ""))[11:23]
        client = e.get("client") or {}
        who = client.get("name") or "?" if isinstance(client, dict) else str(client)
        args = json.dumps(e.get("arguments", {}), ensure_ascii=False)
        args = args if len(args) <= 80 else args[:79] + "…"
        outcome = str(e.get("outcome", ""))
        if e.get("message"):
            outcome += f": {e['message']}"
        outcome = outcome if len(outcome) <= 70 else outcome[:69] + "…"
        rows.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    time,
                    who,
                    e.get("tool", ""),
                    args,
                    e.get("duration_ms", ""),
                    outcome,
                    e.get("approval", ""),
                )
            )
            + " |"
        )
    return "\n".join(rows)


def _cell(value: Any) -> str:
    # Agents choose tool names, client names, arguments and error text: everything goes inside a
    # code span, with its backticks swapped for a look-alike, so no HTML or Markdown in it can
    # escape the span when the user renders %mcp log (trusted output renders HTML unsanitised).
    text = str(value).replace("\n", "⏎").replace("|", "\\|").replace("`", "ˋ")
    text = text if len(text) <= 120 else text[:119] + "…"
    return f"`{text}`" if text else ""
