"""What the user ran and what the frontend saw: a bounded store fed by a tap on ``session.send``.

Every IOPub message of the kernel goes through its one ``Session`` object: stream flushes (on
the IOPub thread), display_data, execute_result, errors, clear_output, and the ``execute_input``
that names the code and execution count of each request. Wrapping ``send`` on that instance sees
exactly what the frontend sees, attributed by the parent msg_id, so async cells and user threads
land in the right cell without guessing.

The tap runs on the kernel's own threads, so it does as little as possible: a frozenset test,
a dict lookup, appending references under a lock. It never copies, never serialises (byte sizes
are string lengths or a bounded walk), and never raises into the kernel. Text beyond the
per-output cap keeps its head and tail; bundles beyond it keep their small parts and a note;
when the whole store passes its budget the oldest cells go first.

Output widgets (ipywidgets ``Output``) are followed as JupyterLab and nbclient follow them: the
widget's ``msg_id`` state (a ``comm_msg`` the tap sees) says which request's outputs it captures
while a ``with out:`` block runs; those outputs are the widget's, shown under the cell that
displays it, never the cell's. Colab's output tags (a ``nodisplay`` display_data) mark outputs,
and a ``clear_output`` naming tags removes only the outputs carrying them.

Agent runs (``execute``, both modes) never reach ``session.send`` (their outputs are captured and
suppressed), so the execute tool records them here with ids ``a1``, ``a2``… (``record_agent``).
Inputs from before ipymcp loaded come from IPython's own history, marked "outputs not captured".
"""

from __future__ import annotations

import collections
import datetime as _dt
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..outputs import encode_binary
from ..text import HeadTail, collapse_overwrites

log = logging.getLogger("ipymcp.history")

_TAPPED = frozenset(
    (
        "execute_input",
        "stream",
        "display_data",
        "update_display_data",
        "execute_result",
        "error",
        "clear_output",
        "execute_reply",
        "status",
        "comm_open",
        "comm_msg",
        "comm_close",
    )
)
_OUTPUT_TYPES = frozenset(("stream", "display_data", "execute_result", "error"))
_CAPTURABLE = _OUTPUT_TYPES | {"clear_output"}
_COMM_TYPES = frozenset(("comm_open", "comm_msg", "comm_close"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_MODEL_REFERENCE = "IPY_MODEL_"
# Containers nested deeper than this are not searched for Output widgets (a cycle guard too).
_WIDGET_WALK = 1_000
# A bounded walk of JSON-like bundle values (plotly, vega): past this many nodes, extrapolate.
_WALK_NODES = 2_000
_EVICTED_MEMORY = 100_000


class HistoryError(LookupError):
    """A cell the agent asked for is not in the history (never ran, or evicted)."""


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="milliseconds")


def approx_size(value: Any, budget: int = _WALK_NODES) -> int:
    """Characters a value would take as JSON, without serialising it (bounded work)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if value is None or isinstance(value, (bool, int, float)):
        return 8
    total, seen, stack = 0, 0, [value]
    while stack:
        item = stack.pop()
        seen += 1
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            for k, v in item.items():
                total += len(k) if isinstance(k, str) else 8
                stack.append(v)
        elif isinstance(item, (list, tuple)):
            total += 2 + len(item)
            if seen + len(stack) + len(item) > budget and len(item) > 64:
                # Big arrays (plot data): measure a sample, scale up.
                sample = item[:: max(1, len(item) // 32)][:32]
                total += int(sum(approx_size(s, 64) for s in sample) * len(item) / max(1, len(sample)))
            else:
                stack.extend(item)
        else:
            total += 8
        if seen > budget:
            # Unvisited items: assume the average so far.
            total += int(total / seen * len(stack))
            break
    return total


class StreamOutput:
    """One stream output (stdout or stderr), kept as the chunks the kernel sent: head + tail."""

    __slots__ = ("name", "kept", "cap", "tags")
    output_type = "stream"

    def __init__(self, name: str, cap: int, tags: frozenset[str] = frozenset(), kept: HeadTail[str] | None = None):
        self.name = name
        self.tags = tags
        self.cap = cap
        self.kept: HeadTail[str] = kept if kept is not None else HeadTail(cap // 2, cap - cap // 2)

    @property
    def size(self) -> int:
        return self.kept.held

    def add(self, text: str) -> int:
        """Append; returns the change in held size."""
        return self.kept.add(text)

    def snapshot(self) -> StreamOutput:
        """A copy to render outside the lock (the tap appends meanwhile)."""
        return StreamOutput(self.name, self.cap, self.tags, self.kept.copy())

    def text(self) -> str:
        kept = self.kept
        if not kept.cut:
            return kept.head() + kept.tail()
        marker = (
            f"\n[... {kept.cut:,} characters not kept by ipymcp's history (over its per-output cap "
            f"of {self.cap:,}); head and tail kept ...]\n"
        )
        return kept.head() + marker + kept.tail()

    def as_output(self) -> dict[str, Any]:
        return {"output_type": "stream", "name": self.name, "text": collapse_overwrites(self.text())}


class RichOutput:
    """display_data / execute_result / error: references to the message's own dicts."""

    __slots__ = ("output_type", "content", "size", "display_id", "notes", "removed", "execution_count", "tags")

    def __init__(self, output_type: str, content: dict[str, Any], cap: int, tags: frozenset[str] = frozenset()):
        self.output_type = output_type
        # Kept apart from the content: an update_display_data replaces the bundle, not the count.
        self.execution_count = content.get("execution_count") if output_type == "execute_result" else None
        self.tags = tags
        self.display_id: str | None = None
        self.notes: list[str] = []
        self.removed = False
        self.content = content
        self.size = 0
        self.set_content(content, cap)

    def set_content(self, content: dict[str, Any], cap: int) -> int:
        """Take ``content`` (update_display_data replaces in place); returns the size change."""
        before = self.size
        self.notes = []
        if self.output_type == "error":
            self.content = content
            self.size = sum(len(line) for line in content.get("traceback") or ()) + 64
            return self.size - before
        data = content.get("data") or {}
        encoded = encode_binary(data)
        if encoded is not data:
            data, content = encoded, {**content, "data": encoded}
        sizes = {mime: approx_size(value) for mime, value in data.items()}
        total = sum(sizes.values())
        if total > cap:
            kept = {}
            for mime, value in data.items():
                if sizes[mime] <= min(cap // 4, 100_000) or (mime == "text/plain" and sizes[mime] <= cap):
                    kept[mime] = value
                else:
                    self.notes.append(
                        f"[{mime} of {sizes[mime]:,} bytes not kept by ipymcp's history (over its per-output "
                        f"cap of {cap:,}); if the object is still in the namespace, re-display it with execute]"
                    )
            content = {**content, "data": kept}
            total = sum(sizes[m] for m in kept)
        self.content = content
        self.size = total + 64
        return self.size - before

    def drop_data(self) -> int:
        """Forget the bundle but a short text/plain (budget pressure inside one huge cell);
        returns the size change."""
        if self.output_type == "error":
            return 0
        data = self.content.get("data") or {}
        plain = data.get("text/plain")
        kept = {"text/plain": plain} if isinstance(plain, str) and len(plain) <= 1_000 else {}
        dropped = {m: v for m, v in data.items() if m not in kept}
        if not dropped:
            return 0
        mimes = ", ".join(f"{m} ({approx_size(v):,} bytes)" for m, v in dropped.items())
        self.notes = [f"[output dropped to keep ipymcp's history under its byte budget: {mimes}]"]
        self.content = {**self.content, "data": kept}
        before, self.size = self.size, 64 + sum(len(v) for v in kept.values())
        return self.size - before

    def as_output(self) -> dict[str, Any]:
        c = self.content
        if self.output_type == "error":
            return {
                "output_type": "error",
                "ename": c.get("ename", ""),
                "evalue": c.get("evalue", ""),
                "traceback": list(c.get("traceback") or ()),
            }
        out: dict[str, Any] = {"output_type": self.output_type, "data": c.get("data") or {}}
        out["metadata"] = c.get("metadata") or {}
        if self.output_type == "execute_result":
            out["execution_count"] = self.execution_count
        if self.notes:
            # In text/plain, so every reader of outputs (get_history, get_output, the resource) shows it.
            data = out["data"]
            plain = data.get("text/plain")
            plain = "".join(plain) if isinstance(plain, list) else (plain or "")
            out["data"] = {**data, "text/plain": (plain + "\n" if plain else "") + "\n".join(self.notes)}
        return out


@dataclass
class CellRecord:
    """One execution: a user's cell (keyed by its request msg_id) or an agent run (``a12``)."""

    key: str
    source: str  # user | agent
    code: str
    execution_count: int | None
    started: str
    t0: float
    status: str = "running"  # running | ok | error | interrupted | aborted
    duration: float | None = None
    outputs: list[Any] = field(default_factory=list)
    size: int = 0
    # clear_output(wait=True) requests waiting for the next output: the Colab tags each names
    # (an empty set clears everything).
    pending_clears: list[frozenset[str]] = field(default_factory=list)
    trimmed: int = 0  # outputs before this index lost their data to the budget
    tags: frozenset[str] = frozenset()  # Colab output tags active now
    agent_id: str | None = None
    mode: str | None = None
    # Output widgets that captured some of this cell's output, in the order they first did.
    widget_writes: dict[str, None] = field(default_factory=dict)

    @property
    def id(self) -> int | str | None:
        """What the agent passes to get_output: the execution count, or ``a12`` for agent runs."""
        return self.agent_id or self.execution_count


@dataclass
class OutputWidget:
    """An ipywidgets ``Output`` widget: what it shows, wherever it is displayed."""

    model_id: str
    outputs: list[Any] = field(default_factory=list)
    size: int = 0
    pending_clears: list[frozenset[str]] = field(default_factory=list)
    trimmed: int = 0
    tags: frozenset[str] = frozenset()
    capturing: str = ""  # the request msg_id whose outputs it takes (its msg_id state)
    last_writer: str | None = None  # key of the newest cell whose output it captured
    dropped: int = 0  # oldest outputs let go to keep it within the per-output cap


Owner = CellRecord | OutputWidget


@dataclass
class EarlierInput:
    """An input from before ipymcp loaded (IPython's history): no outputs were captured."""

    execution_count: int
    code: str
    result_text: str | None = None

    source = "user"
    status = "outputs not captured"

    @property
    def id(self) -> int:
        return self.execution_count


class HistoryStore:
    """The capture store; ``install`` taps the kernel session, ``uninstall`` removes the tap."""

    def __init__(
        self, shell: Any, kernel: Any, max_bytes: int = 64 * 2**20, max_output_bytes: int = 4 * 2**20
    ):
        self.shell = shell
        self.kernel = kernel
        self.max_bytes = max(1, int(max_bytes))
        self.max_output_bytes = max(1000, min(int(max_output_bytes), self.max_bytes))
        self.cells: collections.OrderedDict[str, CellRecord] = collections.OrderedDict()
        self.total = 0
        self.evicted: collections.OrderedDict[Any, None] = collections.OrderedDict()
        self.displays: dict[str, list[tuple[Owner, RichOutput]]] = {}
        self.output_widgets: dict[str, OutputWidget] = {}
        # Widget containers (Box, interactive…): model id -> child model ids, to find the Output
        # widgets a displayed container shows.
        self.widget_children: dict[str, tuple[str, ...]] = {}
        # Request msg_id -> the Output widgets capturing it, the newest (the one that gets the
        # output) last, as in nbclient's output_hook_stack.
        self._capturing: dict[str, list[OutputWidget]] = {}
        self.first_count: int | None = None
        self.tap_errors = 0
        self.evicted_cells = 0
        self.messages_seen = 0
        self._lock = threading.Lock()
        self._agent_ids = itertools.count(1)
        self._session: Any = None
        self._tap: Any = None
        self._previous_send: Any = None
        self._active = False

    # -- installing ------------------------------------------------------------------------------
    def install(self) -> None:
        """Wrap ``kernel.session.send`` (an instance attribute: ``uninstall`` removes it)."""
        session = getattr(self.kernel, "session", None)
        if session is None or self._tap is not None:
            return
        self.first_count = self._adopt_loading_cell()
        original = session.send
        self._previous_send = vars(session).get("send")
        self._active = True
        store = self

        def send(stream: Any, msg_or_type: Any, *args: Any, **kwargs: Any) -> Any:
            msg = original(stream, msg_or_type, *args, **kwargs)
            try:
                if store._active and msg is not None and msg["header"]["msg_type"] in _TAPPED:
                    store._observe(msg)
            except Exception:  # noqa: BLE001 - never break the kernel's messaging
                store.tap_errors += 1
            return msg

        send.__ipymcp_history__ = True  # type: ignore[attr-defined]
        session.send = send
        self._session, self._tap = session, send

    def uninstall(self) -> None:
        session, tap = self._session, self._tap
        self._session = self._tap = None
        if session is None:
            return
        # If someone wrapped send after us, their wrapper stays and ours becomes a pass-through.
        self._active = False
        if vars(session).get("send") is tap:
            if self._previous_send is not None:
                session.send = self._previous_send
            else:
                del session.send

    def _adopt_loading_cell(self) -> int | None:
        """Record the cell running ``%load_ext ipymcp`` (its execute_input went out before the
        tap); returns the first execution count the history captures."""
        count = getattr(self.shell, "execution_count", None)
        try:
            parent = self.shell.get_parent()
            header = parent.get("header") or {}
            content = parent.get("content") or {}
            if header.get("msg_type") != "execute_request" or content.get("silent"):
                return count
            if content.get("store_history", True):
                # Its input is already stored; IPython 9 has already counted it, 7 and 8 have not.
                count = len(self.shell.history_manager.input_hist_raw) - 1
            self.cells[header["msg_id"]] = CellRecord(
                key=header["msg_id"],
                source="user",
                code=content.get("code", ""),
                execution_count=count,
                started=_now(),
                t0=time.monotonic(),
            )
        except Exception:  # noqa: BLE001 - best effort
            log.debug("could not adopt the loading cell", exc_info=True)
        return count

    # -- the tap (kernel threads: keep it cheap) -----------------------------------------------
    def _observe(self, msg: dict[str, Any]) -> None:
        msg_type = msg["header"]["msg_type"]
        content = msg["content"]
        if msg_type in _COMM_TYPES:
            self._observe_comm(msg_type, content)
            return
        parent_id = (msg.get("parent_header") or {}).get("msg_id")
        if not parent_id:
            return
        with self._lock:
            self.messages_seen += 1
            if msg_type == "execute_input":
                self._start_cell(parent_id, content)
                return
            if msg_type == "update_display_data":
                self._update_display(content)
                return
            capturing = self._capturing.get(parent_id)
            if capturing and msg_type in _CAPTURABLE:
                self._to_widget(capturing[-1], parent_id, msg_type, content)
                return
            cell = self.cells.get(parent_id)
            if cell is None:
                return
            if msg_type == "status":
                if content.get("execution_state") == "idle" and cell.duration is None:
                    cell.duration = time.monotonic() - cell.t0
                    if cell.status == "running":
                        cell.status = "ok"
            elif msg_type == "execute_reply":
                cell.duration = time.monotonic() - cell.t0
                status = content.get("status", "ok")
                if status == "error" and content.get("ename") == "KeyboardInterrupt":
                    status = "interrupted"
                cell.status = status
            elif msg_type == "clear_output":
                self._clear_request(cell, content)
            else:
                self._add_output(cell, msg_type, content)

    def _start_cell(self, key: str, content: dict[str, Any]) -> None:
        count = content.get("execution_count")
        if key in self.cells:  # the loading cell, adopted at install
            self.cells[key].code = content.get("code", "")
            return
        self.cells[key] = CellRecord(
            key=key,
            source="user",
            code=content.get("code", ""),
            execution_count=count if isinstance(count, int) else None,
            started=_now(),
            t0=time.monotonic(),
        )
        self.total += len(self.cells[key].code)
        self.cells[key].size = len(self.cells[key].code)
        self._enforce_budget(self.cells[key])

    def _add_output(self, owner: Owner, msg_type: str, content: dict[str, Any]) -> bool:
        """File one output under ``owner``; False when it is not an output the user sees."""
        tag_change = _tag_change(content) if msg_type == "display_data" else None
        if tag_change is not None:
            self._retag(owner, tag_change)
            return False
        if owner.pending_clears:
            self._apply_pending_clears(owner)
        outputs = owner.outputs
        if msg_type == "stream":
            name = content.get("name", "stdout")
            last = outputs[-1] if outputs else None
            if last is None or last.output_type != "stream" or last.name != name or last.tags != owner.tags:
                last = StreamOutput(name, self.max_output_bytes, owner.tags)
                outputs.append(last)
            grown = last.add(content.get("text", ""))
        elif msg_type in _OUTPUT_TYPES:
            record = RichOutput(msg_type, content, self.max_output_bytes, owner.tags)
            display_id = (content.get("transient") or {}).get("display_id")
            if display_id:
                record.display_id = display_id
                self.displays.setdefault(display_id, []).append((owner, record))
            outputs.append(record)
            grown = record.size
        else:
            return False
        owner.size += grown
        self.total += grown
        if isinstance(owner, OutputWidget) and owner.size > self.max_output_bytes:
            self._trim_widget(owner)
        if self.total > self.max_bytes:
            self._enforce_budget(owner)
        return True

    def _trim_widget(self, widget: OutputWidget) -> None:
        """An Output widget fed by callbacks can grow forever (a log): like one output, it keeps
        its newest part within the per-output cap, so it never pushes every cell out."""
        keep, drop, freed = widget.size, 0, 0
        # Down to three quarters of the cap, so a widget that keeps growing is trimmed rarely.
        while keep > self.max_output_bytes * 3 // 4 and drop < len(widget.outputs) - 1:
            keep -= widget.outputs[drop].size
            freed += widget.outputs[drop].size
            drop += 1
        for record in widget.outputs[:drop]:
            if isinstance(record, RichOutput):
                record.removed = True
        del widget.outputs[:drop]
        widget.dropped += drop
        widget.trimmed = max(0, widget.trimmed - drop)
        widget.size -= freed
        self.total -= freed

    def _update_display(self, content: dict[str, Any]) -> None:
        display_id = (content.get("transient") or {}).get("display_id")
        targets = self.displays.get(display_id) if display_id else None
        if not targets:
            return
        alive = [(c, r) for c, r in targets if not r.removed]
        self.displays[display_id] = alive
        for owner, record in alive:
            grown = record.set_content(content, self.max_output_bytes)
            owner.size += grown
            self.total += grown
        if alive and self.total > self.max_bytes:
            self._enforce_budget(alive[-1][0])

    # -- clearing (clear_output, Colab's tagged clears) ------------------------------------------
    def _clear_request(self, owner: Owner, content: dict[str, Any]) -> None:
        tags = frozenset(_tag_list(content.get("output_tags")))
        if content.get("wait"):
            owner.pending_clears.append(tags)
        else:
            self._clear(owner, tags)

    def _apply_pending_clears(self, owner: Owner) -> None:
        pending, owner.pending_clears = owner.pending_clears, []
        for tags in pending:
            self._clear(owner, tags)

    def _clear(self, owner: Owner, tags: frozenset[str] = frozenset()) -> None:
        """Remove the outputs carrying every one of ``tags`` (all outputs when no tags)."""
        kept = [r for r in owner.outputs if tags and not tags <= r.tags]
        for record in owner.outputs:
            if isinstance(record, RichOutput) and (not tags or tags <= record.tags):
                record.removed = True
        freed = sum(r.size for r in owner.outputs) - sum(r.size for r in kept)
        owner.outputs = kept
        owner.trimmed = 0
        owner.size -= freed
        self.total -= freed
        if not tags:
            owner.pending_clears = []
            if isinstance(owner, OutputWidget):
                owner.dropped = 0

    def _retag(self, owner: Owner, change: dict[str, Any]) -> None:
        added = frozenset(_tag_list(change.get("add_tags")))
        removed = frozenset(_tag_list(change.get("remove_tags")))
        owner.tags = (owner.tags | added) - removed

    # -- Output widgets -----------------------------------------------------------------------------
    def _observe_comm(self, msg_type: str, content: dict[str, Any]) -> None:
        """Follow ipywidgets models: Output widgets' msg_id and outputs, containers' children.

        Most comm traffic (slider drags, ipymcp's own comm) fails the first test, outside the lock.
        """
        comm_id = content.get("comm_id")
        if not isinstance(comm_id, str):
            return
        if msg_type == "comm_open":
            if content.get("target_name") != "jupyter.widget":
                return
            state = (content.get("data") or {}).get("state")
            if not isinstance(state, dict):
                return
            if state.get("_model_name") == "OutputModel":
                with self._lock:
                    widget = self.output_widgets.setdefault(comm_id, OutputWidget(comm_id))
                    self._widget_state(widget, state)
            elif "children" in state:
                with self._lock:
                    self.widget_children[comm_id] = _model_ids(state["children"])
        elif comm_id in self.output_widgets or comm_id in self.widget_children:
            if msg_type == "comm_close":
                with self._lock:
                    self._forget_widget(comm_id)
                return
            data = content.get("data") or {}
            state = data.get("state")
            # "update" is the kernel's own change. ipywidgets 8 echoes a frontend's changes back as
            # "echo_update": for outputs that is a frontend's copy of the messages seen here already.
            if data.get("method") != "update" or not isinstance(state, dict):
                return
            with self._lock:
                widget = self.output_widgets.get(comm_id)
                if widget is not None:
                    self._widget_state(widget, state)
                elif "children" in state:
                    self.widget_children[comm_id] = _model_ids(state["children"])

    def _widget_state(self, widget: OutputWidget, state: dict[str, Any]) -> None:
        if "msg_id" in state:
            self._capture_for(widget, state["msg_id"] if isinstance(state["msg_id"], str) else "")
        outputs = state.get("outputs")
        if isinstance(outputs, (list, tuple)) and (outputs or widget.outputs):
            # As JupyterLab's OutputModel.setOutputs: outputs set from the kernel (append_stdout,
            # out.outputs = ...) replace what the widget showed.
            self._clear(widget)
            for output in outputs:
                if isinstance(output, dict):
                    self._add_widget_output(widget, output)

    def _add_widget_output(self, widget: OutputWidget, output: dict[str, Any]) -> None:
        kind = output.get("output_type")
        if kind == "stream":
            text = output.get("text", "")
            text = "".join(text) if isinstance(text, list) else str(text)
            self._add_output(widget, "stream", {"name": output.get("name", "stdout"), "text": text})
        elif kind in _OUTPUT_TYPES:
            self._add_output(widget, kind, output)

    def _capture_for(self, widget: OutputWidget, msg_id: str) -> None:
        previous = self._capturing.get(widget.capturing)
        if previous and widget in previous:
            previous.remove(widget)
            if not previous:
                del self._capturing[widget.capturing]
        widget.capturing = msg_id
        if msg_id:
            self._capturing.setdefault(msg_id, []).append(widget)

    def _to_widget(self, widget: OutputWidget, parent_id: str, msg_type: str, content: dict[str, Any]) -> None:
        if msg_type == "clear_output":
            self._clear_request(widget, content)
            return
        if self._add_output(widget, msg_type, content):
            cell = self.cells.get(parent_id)
            if cell is not None:
                cell.widget_writes[widget.model_id] = None
                widget.last_writer = cell.key

    def _forget_widget(self, model_id: str) -> None:
        self.widget_children.pop(model_id, None)
        widget = self.output_widgets.pop(model_id, None)
        if widget is None:
            return
        self._capture_for(widget, "")
        self._clear(widget)

    def _output_widgets_shown_by(self, model_id: str) -> list[str]:
        """The Output widgets a displayed widget shows: itself, or inside its containers."""
        found: list[str] = []
        stack, visited = [model_id], set()
        while stack and len(visited) < _WIDGET_WALK:
            current = stack.pop()
            if current in visited:
                continue
            visited.add(current)
            if current in self.output_widgets:
                found.append(current)
            stack.extend(reversed(self.widget_children.get(current, ())))
        return found

    def _enforce_budget(self, current: Owner) -> None:
        """Oldest cells first; if one cell alone is over budget, its oldest outputs go."""
        while self.total > self.max_bytes:
            victim = next((key for key, cell in self.cells.items() if cell is not current), None)
            if victim is None:
                break
            self._evict(victim)
        outputs = current.outputs
        # Resume where the last trim stopped: a cell displaying thousands of images stays O(1).
        while self.total > self.max_bytes and current.trimmed < len(outputs):
            record = outputs[current.trimmed]
            current.trimmed += 1
            if isinstance(record, RichOutput):
                shrunk = record.drop_data()
                current.size += shrunk
                self.total += shrunk

    def _evict(self, key: str) -> None:
        cell = self.cells.pop(key)
        self.total -= cell.size
        for record in cell.outputs:
            if isinstance(record, RichOutput):
                record.removed = True
        self.evicted_cells += 1
        self.evicted[cell.id] = None
        while len(self.evicted) > _EVICTED_MEMORY:
            self.evicted.popitem(last=False)

    # -- agent runs ----------------------------------------------------------------------------
    def record_agent(self, code: str, result: Any, mode: str) -> str:
        """Record one ``execute`` call (its ``ExecutionResult``); returns its id (``a12``)."""
        outputs, status, duration = result.outputs, result.status, result.duration
        execution_count = result.execution_count
        agent_id = f"a{next(self._agent_ids)}"
        started = (_dt.datetime.now().astimezone() - _dt.timedelta(seconds=duration)).isoformat(
            timespec="milliseconds"
        )
        cell = CellRecord(
            key=agent_id,
            source="agent",
            code=code,
            execution_count=execution_count,
            started=started,
            t0=time.monotonic() - duration,
            status=status,
            duration=duration,
            agent_id=agent_id,
            mode=mode,
        )
        with self._lock:
            self.cells[agent_id] = cell
            cell.size = len(code)
            self.total += cell.size
            for out in outputs:
                kind = out.get("output_type")
                if kind == "stream":
                    self._add_output(cell, "stream", {"name": out.get("name"), "text": out.get("text", "")})
                elif kind in _OUTPUT_TYPES:
                    self._add_output(cell, kind, out)
            self._enforce_budget(cell)
        return agent_id

    # -- reading (server threads) --------------------------------------------------------------
    def entries(self, last: int | None = None, source: str = "all") -> list[CellRecord | EarlierInput]:
        """Oldest first. Earlier inputs (before ipymcp loaded) come first."""
        with self._lock:
            captured = [c for c in self.cells.values() if source in ("all", c.source)]
        earlier: list[CellRecord | EarlierInput] = []
        if source in ("all", "user") and (last is None or len(captured) < last):
            earlier = list(self.earlier_inputs())
        combined = earlier + captured
        return combined[-last:] if last else combined

    def earlier_inputs(self) -> list[EarlierInput]:
        first = self.first_count
        if not first:
            return []
        manager = getattr(self.shell, "history_manager", None)
        raw = list(getattr(manager, "input_hist_raw", None) or [])
        reprs = dict(getattr(manager, "output_hist_reprs", None) or {})
        adopted = {c.execution_count for c in list(self.cells.values()) if c.source == "user"}
        entries = []
        for count in range(1, min(first, len(raw))):
            if count in adopted:
                continue
            code = raw[count]
            if not code.strip():
                continue
            result = reprs.get(count)
            entries.append(EarlierInput(count, code, result if isinstance(result, str) else None))
        return entries

    def find(self, ident: int | str) -> CellRecord | EarlierInput:
        """The newest entry whose id is ``ident`` (an execution count, or ``a12``)."""
        key = normalise_id(ident)
        with self._lock:
            for cell in reversed(self.cells.values()):
                if cell.id == key or (isinstance(key, int) and cell.execution_count == key):
                    return cell
        if isinstance(key, int):
            for entry in self.earlier_inputs():
                if entry.execution_count == key:
                    return entry
        if key in self.evicted:
            raise HistoryError(
                f"cell {key} was evicted from ipymcp's history to keep it under its budget of "
                f"{self.max_bytes:,} bytes (c.IPyMCP.history_max_bytes); re-run it or inspect its variables"
            )
        newest = self.newest_id()
        raise HistoryError(
            f"no cell {ident!r} in the history: it never ran in this kernel session"
            + (f" (the newest is {newest!r})" if newest is not None else "")
            + "; call get_history() to see the ids"
        )

    def newest_id(self) -> int | str | None:
        with self._lock:
            if self.cells:
                return next(reversed(self.cells.values())).id
        return None

    def outputs_of(self, cell: CellRecord) -> list[dict[str, Any]]:
        """nbformat-like outputs as held (references to the kernel's dicts, never copies).

        A display of a widget that is, or contains, an Output widget carries what that widget
        shows under ``output_widgets``: ``[{"model_id": ..., "outputs": [...]}]``.
        """
        with self._lock:
            snapshot = self._snapshot(cell.outputs, frozenset())
        return _render(snapshot)

    def widget_writes_of(self, cell: CellRecord) -> list[dict[str, Any]]:
        """Output widgets that captured this cell's output and are displayed elsewhere.

        Each: ``model_id``, ``shown_under`` (ids of the cells displaying it), ``closed`` if it
        was closed since. A widget no cell in the history displays has its ``outputs`` listed
        under the newest cell that wrote to it, so they are shown somewhere.
        """
        with self._lock:
            if not cell.widget_writes:
                return []
            displayed = self._cells_displaying_output_widgets()
            notes: list[dict[str, Any]] = []
            for model_id in cell.widget_writes:
                where = displayed.get(model_id, [])
                if cell.id in where:
                    continue  # shown with this cell's own outputs
                note: dict[str, Any] = {"model_id": model_id, "shown_under": where}
                widget = self.output_widgets.get(model_id)
                if widget is None:
                    note["closed"] = True
                elif not where and widget.last_writer == cell.key:
                    note["snapshot"] = self._snapshot(widget.outputs, frozenset((model_id,)))
                    if widget.dropped:
                        note["outputs_not_kept"] = widget.dropped
                notes.append(note)
        for note in notes:
            if "snapshot" in note:
                note["outputs"] = _render(note.pop("snapshot"))
        return notes

    def _snapshot(self, records: list[Any], inside: frozenset[str]) -> list[tuple[Any, ...]]:
        """What ``_render`` needs, copied under the lock (the tap appends meanwhile)."""
        items: list[tuple[Any, ...]] = []
        for record in records:
            if isinstance(record, StreamOutput):
                items.append((record.snapshot(),))
            else:
                widgets = [
                    (
                        model_id,
                        self._snapshot(self.output_widgets[model_id].outputs, inside | {model_id}),
                        self.output_widgets[model_id].dropped,
                    )
                    for model_id in self._output_widgets_in_view(record)
                    if model_id not in inside  # an Output widget displayed inside itself: once
                ]
                items.append((record, widgets))
        return items

    def _output_widgets_in_view(self, record: RichOutput) -> list[str]:
        if record.output_type == "error":
            return []
        view = (record.content.get("data") or {}).get(WIDGET_VIEW)
        model_id = view.get("model_id") if isinstance(view, dict) else None
        return self._output_widgets_shown_by(model_id) if isinstance(model_id, str) else []

    def _cells_displaying_output_widgets(self) -> dict[str, list[Any]]:
        displayed: dict[str, list[Any]] = {}
        for cell in self.cells.values():
            for record in cell.outputs:
                if isinstance(record, RichOutput):
                    for model_id in self._output_widgets_in_view(record):
                        ids = displayed.setdefault(model_id, [])
                        if cell.id not in ids:
                            ids.append(cell.id)
        return displayed

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "cells": len(self.cells),
                "bytes": self.total,
                "budget_bytes": self.max_bytes,
                "per_output_cap": self.max_output_bytes,
                "evicted": self.evicted_cells,
                "output_widgets": len(self.output_widgets),
                "tap_errors": self.tap_errors,
            }


def normalise_id(ident: int | str) -> int | str:
    if isinstance(ident, str):
        text = ident.strip().lstrip("[").rstrip("]").strip()
        if text.lstrip("-").isdigit():
            return int(text)
        return text.lower()
    return ident


def _render(snapshot: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    result = []
    for item in snapshot:
        record = item[0]
        if isinstance(record, StreamOutput):
            result.append(record.as_output())
            continue
        output = record.as_output()
        if item[1]:
            output["output_widgets"] = [_widget_entry(model_id, inner, dropped) for model_id, inner, dropped in item[1]]
        result.append(output)
    return result


def _widget_entry(model_id: str, snapshot: list[tuple[Any, ...]], dropped: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"model_id": model_id, "outputs": _render(snapshot)}
    if dropped:
        entry["outputs_not_kept"] = dropped
    return entry


def _tag_change(content: dict[str, Any]) -> dict[str, Any] | None:
    """Colab's tag marker: a display_data the frontend does not show (``outputarea.nodisplay``)."""
    metadata = content.get("metadata")
    if not metadata:
        return None
    area = metadata.get("outputarea")
    return area if isinstance(area, dict) and area.get("nodisplay") else None


def _tag_list(value: Any) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(tag) for tag in value]


def _model_ids(children: Any) -> tuple[str, ...]:
    """``["IPY_MODEL_<id>", ...]`` (how ipywidgets serialises widget references) -> ids."""
    if not isinstance(children, (list, tuple)):
        return ()
    return tuple(c[len(_MODEL_REFERENCE) :] for c in children if isinstance(c, str) and c.startswith(_MODEL_REFERENCE))
