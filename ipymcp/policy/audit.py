"""The audit log: one JSON line per tool call, in a private per-kernel file next to the runtime file.

Lines are queued and written by a small daemon thread, so a slow disk never stalls the server's
event loop. Files are created with mode 0600 and never contain the bearer token: the current and
recent tokens are scrubbed from every string before it is cut.

It cannot be flushed away: every field is bounded, each line is at most ``LINE_MAX_BYTES`` (a
value cut to fit keeps its head plus its size and SHA-256), and the log rotates through ``FILES``
files that together stay within ``audit_max_bytes``. So it always keeps at least
``guaranteed_calls(audit_max_bytes)`` calls however large each one is (5,000+ by default), and
about 20 times more ordinary ones (~400 bytes a line).
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

from ..text import scrub, shorten

log = logging.getLogger("ipymcp.audit")

LINE_MAX_BYTES = 8192
FILES = 10  # the current file and nine rotated ones (.1 newest … .9 oldest)
# Arguments whose value is a program: kept whole while the line allows (~7,000 characters), that
# is what a reviewer needs; longer ones keep their head, size and hash.
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
# Names an agent chooses (tool, argument and client names, dict keys): short.
NAME_FIELDS = frozenset({"tool", "name", "version", "session", "peer", "protocol"})
NAME_LIMIT = 200
FULL_LIMIT = 7_000
OTHER_LIMIT = 2_000
OUTCOME_LIMIT = 300  # an error's message, as the line keeps it
MAX_ITEMS = 50
# Successive limits (programs, other strings) tried until a line fits LINE_MAX_BYTES.
_FITTING = ((FULL_LIMIT, OTHER_LIMIT), (2_000, 500), (300, 100), (60, 30))


def guaranteed_calls(max_bytes: int) -> int:
    """Calls the log keeps whatever their size: nine full rotated files' worth of maximal lines."""
    return (FILES - 1) * (_file_bytes(max_bytes) // LINE_MAX_BYTES)


def _file_bytes(max_bytes: int) -> int:
    return max(LINE_MAX_BYTES, int(max_bytes) // FILES)


def summarise(value: str | bytes) -> dict[str, Any]:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()[:16]}


def audit_arguments(arguments: Any) -> Any:
    """What the log keeps of a call's arguments: programs in full, payloads as size + hash."""
    if not isinstance(arguments, dict):
        return _bounded(arguments, OTHER_LIMIT)
    kept: dict[str, Any] = {}
    for key, value in list(arguments.items())[:MAX_ITEMS]:
        name = _name(str(key))
        if isinstance(value, (str, bytes)) and str(key).lower() in PAYLOAD_ARGUMENTS:
            kept[name] = summarise(value)
        elif isinstance(value, str) and str(key).lower() in FULL_ARGUMENTS:
            kept[name] = _cut(value, FULL_LIMIT)
        else:
            kept[name] = _bounded(value, OTHER_LIMIT)
    if len(arguments) > MAX_ITEMS:
        kept["…"] = f"{len(arguments) - MAX_ITEMS} more arguments"
    return kept


def _cut(value: str, limit: int, head: int | None = None) -> Any:
    return value if len(value) <= limit else {"head": value[: head or limit], **summarise(value)}


def _name(key: str) -> str:
    """A dict key (argument names are the agent's choice): a short string, with the hash of a long one."""
    if len(key) <= NAME_LIMIT:
        return key
    facts = summarise(key)
    return f"{key[:NAME_LIMIT]}…[{facts['size']} bytes, sha256 {facts['sha256']}]"


def _bounded(value: Any, limit: int, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _cut(value, limit, 200)
    if isinstance(value, bytes):
        return summarise(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if depth > 4:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        out = {_name(str(k)): _bounded(v, limit, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["…"] = f"{len(items) - MAX_ITEMS} more keys"
        return out
    if isinstance(value, (list, tuple)):
        out_list = [_bounded(v, limit, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            out_list.append(f"… {len(value) - MAX_ITEMS} more items")
        return out_list
    return _bounded(repr(value), limit, depth + 1)


def _fit(value: Any, secrets: list[str], full: int, other: int, key: str = "", depth: int = 0) -> Any:
    """The whole entry with every string scrubbed of ``secrets`` and cut to its field's limit."""
    if isinstance(value, str):
        value = scrub(value, secrets)
        if key == "head":  # already the head of a cut value (with its size and hash beside it)
            return value[:full]
        limit = min(NAME_LIMIT, other) if key in NAME_FIELDS else full if key in FULL_ARGUMENTS else other
        return _cut(value, limit)
    if depth > 6:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        out = {}
        for k, v in items[:MAX_ITEMS]:
            out[_name(scrub(str(k), secrets))] = _fit(v, secrets, full, other, str(k), depth + 1)
        if len(items) > MAX_ITEMS:
            out["…"] = f"{len(items) - MAX_ITEMS} more keys"
        return out
    if isinstance(value, (list, tuple)):
        return [_fit(v, secrets, full, other, key, depth + 1) for v in value[:MAX_ITEMS]]
    if isinstance(value, bytes):
        return summarise(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return _fit(repr(value), secrets, full, other, key, depth)


class AuditLog:
    """Append-only JSON lines; ``record`` is cheap and thread-safe (a queue put).

    ``max_bytes`` is the budget of all ``FILES`` files together (each rotates at a tenth of it).
    """

    def __init__(self, path: Path, max_bytes: int, secrets: Callable[[], Iterable[str]] = tuple):
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self._secrets = secrets
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._flushed = threading.Condition()
        self._pending = 0
        self._closed = False

    def files(self) -> list[Path]:
        """The log's files, newest first."""
        return [self.path, *(self.path.with_name(f"{self.path.name}.{i}") for i in range(1, FILES))]

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
            while len(batch) < 1_000:  # drain what is already queued: one write per burst
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
            lines = [self._line(entry) for entry in batch]
            with self._write_lock:
                self._append(lines)
        except Exception:  # noqa: BLE001 - the log must never take the server down
            log.exception("audit write failed")
        finally:
            with self._flushed:
                self._pending -= len(batch)
                self._flushed.notify_all()

    def _append(self, lines: list[str]) -> None:
        """Append, rotating before a line that would take the current file past its share."""
        limit = _file_bytes(self.max_bytes)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = 0
        chunk: list[str] = []
        for line in lines:
            length = len(line.encode("utf-8"))
            if size and size + length > limit:
                self._append_text("".join(chunk))
                self._rotate()
                chunk, size = [], 0
            chunk.append(line)
            size += length
        self._append_text("".join(chunk))

    def _append_text(self, text: str) -> None:
        if not text:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(text)

    def _rotate(self) -> None:
        files = self.files()
        for index in range(len(files) - 1, 0, -1):  # .8 -> .9 (replacing the oldest) … current -> .1
            if files[index - 1].exists():
                os.replace(files[index - 1], files[index])

    def _line(self, entry: dict[str, Any]) -> str:
        secrets = [s for s in self._secrets() if s]
        text = ""
        for full, other in _FITTING:
            text = json.dumps(_fit(entry, secrets, full, other), ensure_ascii=False, default=repr)
            text = scrub(text, secrets)  # the last guard: nothing may carry the token
            # Lone surrogates (invalid UTF-8 sent by a client) must not break the write.
            text = text.encode("utf-8", "backslashreplace").decode("utf-8") + "\n"
            if len(text.encode("utf-8")) <= LINE_MAX_BYTES:
                return text
        return json.dumps({"time": entry.get("time"), "entry_cut": summarise(text)}) + "\n"

    # -- reading -----------------------------------------------------------------------------
    def recent(self, n: int) -> list[dict[str, Any]]:
        self.flush()
        entries: list[dict[str, Any]] = []
        for path in self.files():
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
        args = shorten(args, 80)
        outcome = str(e.get("outcome", ""))
        if e.get("message"):
            outcome += f": {e['message']}"
        outcome = shorten(outcome, 70)
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
    text = shorten(text, 120)
    return f"`{text}`" if text else ""
