"""Capture everything agent code produces, and keep it out of the user's notebook.

While an agent run is captured:

* the shell's parent header is one of our own (``ipymcp-agent-…``): ipykernel stamps every
  output message with it, so a tap on ``kernel.session.send`` diverts each message with that
  parent into the capture, whoever sent it: display hooks, ipykernel 6.17's ``clear_output``
  (sent straight through the session), Colab's ``colab_request`` and tagged clears, errors from a
  shell's own ``_showtraceback`` (Colab's passes a traceback *object*; we never touch it). On
  ipykernel 7 the parent is set for the agent's task only (context variables); ipykernel 6 has
  one process-wide parent, so a message with ours sent from another thread (a user's background
  thread, our server's status line) gets the user's parent back;
* ``sys.stdout``/``sys.stderr`` are a router that sends writes made in the agent's context to the
  capture and everything else (a user's background thread) to the kernel's own stream. Outside
  agent runs the kernel's streams are left in place: a router on every write made a print-heavy
  user cell ~25% slower. Whatever the agent's code assigned to them is put back afterwards;
* what the kernel's fd watchers read (``os.system``, subprocesses, C code printing) goes to the
  capture too (``_FdOutput``);
* long streams keep their head and tail, sized from the output budget, and count the rest: a
  300 MB print costs a few MB, not 600;
* ``input()``, ``getpass`` and the kernel's stdin requests fail at once (nobody would answer), and
  so do frontend requests that wait for a reply (Colab's ``eval_js``);
* setting ``shell.exit_now`` (``kernel.do_shutdown``, …) is refused: it would end the kernel.

"The agent's context" is a context variable, not the thread: agent code runs on the kernel's
main thread, where ipykernel 7 also runs comm handlers while an async agent job awaits.
"""

from __future__ import annotations

import builtins
import contextvars
import getpass
import itertools
import logging
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

from ..outputs import encode_binary
from ..text import HeadTail, cut_marker

log = logging.getLogger("ipymcp.capture")

AGENT_PARENT_PREFIX = "ipymcp-agent-"

EXIT_REFUSED = (
    "Refused: this would shut down the user's kernel (exit_now / do_shutdown). Agent code may not "
    "end the kernel; ask the user to restart or shut it down from their notebook."
)
NO_INPUT = (
    "{what} is not available to agent code: the prompt would wait for an answer nobody can give "
    "(an agent's run has no notebook cell). Put the value in your code, or ask the user for it."
)
NO_FRONTEND_REQUEST = (
    "Refused: {what} asks the notebook's frontend to run something in the current cell and waits "
    "for its answer (like google.colab's eval_js), and agent code has no cell to run it in, so it "
    "would wait forever. Do the work in Python, or ask the user to run it in a cell."
)

# Message types that are not outputs of a cell: they go where they were going.
_PASS_THROUGH = frozenset(
    {"comm_open", "comm_msg", "comm_close", "status", "execute_input", "shutdown_reply"}
)

_active: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("ipymcp_capture", default=None)
# The captures whose agent parent is in use, by that parent's msg_id (read by the session tap).
_diverted: dict[str, Capture] = {}
# Agent parent ids: unique per process (a random part) and cheap per run (a counter).
_AGENT_MSG_IDS = f"{AGENT_PARENT_PREFIX}{uuid.uuid4().hex[:12]}-"
_agent_runs = itertools.count(1)


class FrontendRequestError(RuntimeError):
    """A request to the notebook's frontend that needs a cell and an answer, from agent code."""


class _Router:
    # Not an io.TextIOBase subclass: that shadowed OutStream's .encoding and .fileno().
    def __init__(self, original: Any, name: str):
        self._original = original
        self._name = name

    def write(self, text: str) -> int:
        capture = _active.get()
        if capture is not None and capture.open:
            if not isinstance(text, str):  # as the kernel's stream says it
                raise TypeError(f"write() argument must be str, not {type(text).__name__}")
            capture.stream(self._name, text)
            return len(text)
        return self._original.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _active.get() is None:
            self._original.flush()

    def set_parent(self, parent: Any) -> None:
        # ipykernel 6's shell.set_parent reaches the kernel's stream too; our agent parent must
        # not, or a user's background thread printing meanwhile would be stamped with it.
        if not _is_agent_parent(parent):
            self._original.set_parent(parent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class Capture:
    """``with Capture(shell) as cap: ...`` collects nbformat-like output dicts in ``cap.outputs``.

    ``max_stream_chars``: each stream keeps this many characters of head and of tail (give it
    the text budget of the answer, so the answer's own cut falls inside what was dropped).
    """

    def __init__(self, shell: Any, max_stream_chars: int = 20_000):
        self.shell = shell
        self.outputs: list[dict[str, Any]] = []
        # Sentences for the agent about what ipymcp undid after its code (sys.stdout replaced…).
        self.notes: list[str] = []
        self.open = False
        self._keep = max(1_000, int(max_stream_chars))
        self._lock = threading.Lock()
        self._pending_clear = False
        self._tags: frozenset[str] = frozenset()  # Colab's output tags in effect
        self._thread_ident: int | None = None
        self._token: contextvars.Token | None = None
        self._parent: _AgentParent | None = None
        self._saved_input: tuple[Any, Any] | None = None
        self._fd_output: _FdOutput | None = None

    # -- what agent code produces ----------------------------------------------------------------
    def stream(self, name: str, text: str) -> None:
        with self._lock:
            last = self.outputs[-1] if self.outputs else None
            if (
                last is None
                or last["output_type"] != "stream"
                or last["name"] != name
                or last["_tags"] is not self._tags
            ):
                self._apply_wait_clear()
                last = {
                    "output_type": "stream",
                    "name": name,
                    "_text": HeadTail(self._keep, self._keep),
                    "_tags": self._tags,
                }
                self.outputs.append(last)
            last["_text"].add(text)

    def display(self, msg_type: str, content: dict[str, Any]) -> None:
        with self._lock:
            if msg_type == "clear_output":
                self._clear(content)
                return
            metadata = content.get("metadata") or {}
            area = metadata.get("outputarea") if isinstance(metadata, dict) else None
            if isinstance(area, dict) and area.get("nodisplay"):
                # Colab announces its output tags this way; nothing is shown.
                self._tags = (self._tags | set(area.get("add_tags") or ())) - set(
                    area.get("remove_tags") or ()
                )
                return
            entry = {
                "output_type": "display_data",
                "data": encode_binary(content.get("data", {})),
                "metadata": metadata,
            }
            display_id = (content.get("transient") or {}).get("display_id")
            if display_id:
                entry["display_id"] = display_id
                if msg_type == "update_display_data":
                    for i, old in enumerate(self.outputs):
                        if old.get("display_id") == display_id:
                            self.outputs[i] = {**entry, "_tags": old["_tags"]}
                    return
            elif msg_type == "update_display_data":
                return
            self._append(entry)

    def result(self, content: dict[str, Any]) -> None:
        entry = {
            "output_type": "execute_result",
            "data": encode_binary(content.get("data", {})),
            "metadata": content.get("metadata", {}),
            "execution_count": content.get("execution_count"),
        }
        with self._lock:
            self._append(entry)

    def error(self, ename: str, evalue: str, traceback: Any) -> None:
        entry = {
            "output_type": "error",
            "ename": ename,
            "evalue": evalue,
            "traceback": _traceback_lines(traceback),
        }
        with self._lock:
            self._append(entry)

    def receive(self, msg: dict[str, Any]) -> None:
        """A message the kernel was about to send to the notebook on behalf of agent code."""
        msg_type = msg["header"]["msg_type"]
        content = msg.get("content") or {}
        if msg_type == "stream":
            self.stream(content.get("name", "stdout"), content.get("text", ""))
        elif msg_type in ("display_data", "update_display_data", "clear_output"):
            self.display(msg_type, content)
        elif msg_type == "execute_result":
            self.result(content)
        elif msg_type == "error":
            self.error(content.get("ename", ""), content.get("evalue", ""), content.get("traceback"))
        elif "colab_msg_id" in (msg.get("metadata") or {}):
            raise FrontendRequestError(NO_FRONTEND_REQUEST.format(what=f"a {msg_type} that expects a reply"))
        # Anything else (a frontend request that expects no reply) has no cell to go to: dropped.

    def _append(self, entry: dict[str, Any]) -> None:
        self._apply_wait_clear()
        entry["_tags"] = self._tags
        self.outputs.append(entry)

    def _clear(self, content: dict[str, Any]) -> None:
        tags = frozenset(content.get("output_tags") or ())
        if content.get("wait"):
            self.outputs.append({"output_type": "clear_output", "_tags": tags})
            self._pending_clear = True
        else:
            self._remove(len(self.outputs), tags)

    def _remove(self, end: int, tags: frozenset[str]) -> None:
        # Colab's tagged clear removes only the outputs carrying every one of its tags.
        kept = [out for out in self.outputs[:end] if tags and not tags <= out["_tags"]]
        self.outputs[:end] = kept

    def _apply_wait_clear(self) -> None:
        # clear_output(wait=True) clears when the next output arrives
        if not self._pending_clear:
            return
        self._pending_clear = False
        for i in range(len(self.outputs) - 1, -1, -1):
            marker = self.outputs[i]
            if marker["output_type"] == "clear_output":
                del self.outputs[i]
                self._remove(i, marker["_tags"])
                return

    def finish(self) -> list[dict[str, Any]]:
        """The outputs with streams joined; call once capture has ended."""
        done = []
        for out in self.outputs:
            if out["output_type"] == "clear_output":
                continue
            if out["output_type"] == "stream":
                kept: HeadTail[str] = out["_text"]
                out = {"output_type": "stream", "name": out["name"], "text": _captured_text(kept)}
                if kept.cut:
                    out["length"] = kept.total  # before the cut
            else:
                out = {k: v for k, v in out.items() if k != "_tags"}
            done.append(out)
        return done

    # -- entering and leaving ----------------------------------------------------------------------
    def __enter__(self) -> Capture:
        if _active.get() is not None:
            raise RuntimeError("a capture is already active in this context")
        self._thread_ident = threading.get_ident()
        self._token = _active.set(self)
        self.open = True
        _route_streams()
        self._fd_output = _FdOutput(self)
        self._saved_input = _refuse_input()
        self._parent = _AgentParent(self.shell)
        _diverted[self._parent.enter()] = self
        return self

    def __exit__(self, *exc: Any) -> None:
        # Each step runs whatever the one before did: a half-restored kernel is the worst outcome.
        for step in (
            _flush_kernel_streams,  # output the agent left in the kernel's own streams is ours
            self._close_fd_output,
            self._leave_parent,
            lambda: _restore_input(self._saved_input),
            lambda: self.notes.extend(_unroute_streams()),
        ):
            try:
                step()
            except Exception:  # noqa: BLE001
                log.exception("restoring the kernel after an agent run")
        self.open = False
        if self._token is not None:
            _active.reset(self._token)
            self._token = None

    def _close_fd_output(self) -> None:
        fd_output, self._fd_output = self._fd_output, None
        if fd_output is not None:
            fd_output.close()

    def _leave_parent(self) -> None:
        parent, self._parent = self._parent, None
        if parent is not None:
            _diverted.pop(parent.msg_id, None)
            parent.exit()


def _captured_text(kept: HeadTail[str]) -> str:
    if not kept.cut:
        return kept.head() + kept.tail()
    return kept.head() + cut_marker(kept.cut, when="while capturing") + kept.tail()


# -- the agent's own parent header ----------------------------------------------------------------
class _AgentParent:
    """Stamp agent output with a parent of its own; the user's comes back on exit."""

    def __init__(self, shell: Any):
        self.shell = shell
        self.user_parent: Any = {}
        self.user_header: dict[str, Any] = {}
        self.msg_id = ""
        self._tokens: Any = None

    def enter(self) -> str:
        shell = self.shell
        self.user_parent = shell.get_parent() or {}
        self.user_header = _header_of(self.user_parent)
        # The user's session and username stay: session-level frontend requests still route.
        header = {
            **self.user_header,
            "msg_id": f"{_AGENT_MSG_IDS}{next(_agent_runs)}",
            "msg_type": "execute_request",
        }
        header.setdefault("session", "")
        self.msg_id = header["msg_id"]
        parent = {
            "header": header,
            "msg_id": self.msg_id,
            "msg_type": "execute_request",
            "parent_header": {},
            "metadata": {},
            "content": {},
        }
        if hasattr(shell, "set_thread_parent"):
            # ipykernel >= 7: context variables, so only the agent's task sees this parent.
            self._tokens = shell.set_thread_parent(parent)
        else:
            # ipykernel 6: one process-wide parent (other threads are handled in the session tap).
            shell.set_parent(parent)
        return self.msg_id

    def exit(self) -> None:
        if self._tokens is not None:
            self.shell.reset_thread_parent(self._tokens)
        else:
            self.shell.set_parent(self.user_parent)


def _header_of(parent: Any) -> dict[str, Any]:
    if not isinstance(parent, dict) or not parent:
        return {}
    header = parent.get("header", parent)
    return dict(header) if isinstance(header, dict) else {}


def _is_agent_parent(parent: Any) -> bool:
    return str(_header_of(parent).get("msg_id", "")).startswith(AGENT_PARENT_PREFIX)


# -- sys.stdout / sys.stderr --------------------------------------------------------------------------
_routing_lock = threading.Lock()
_routing_depth = 0
_kernel_streams: dict[str, Any] = {}


def _route_streams() -> None:
    global _routing_depth
    with _routing_lock:
        _routing_depth += 1
        if _routing_depth == 1:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                _kernel_streams[name] = stream._original if isinstance(stream, _Router) else stream
                setattr(sys, name, _Router(_kernel_streams[name], name))


def _unroute_streams() -> list[str]:
    """Put the kernel's streams back; sentences for the agent if its code had replaced them."""
    global _routing_depth
    notes = []
    with _routing_lock:
        _routing_depth = max(0, _routing_depth - 1)
        if _routing_depth == 0:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                kernel_stream = _kernel_streams.pop(name, None)
                if kernel_stream is None:
                    continue
                if not isinstance(stream, _Router):
                    notes.append(
                        f"[ipymcp: your code replaced sys.{name} (with {type(stream).__name__}); it was "
                        f"restored so the user's cells keep printing. Write to a file or an io.StringIO "
                        f"of your own instead.]"
                    )
                setattr(sys, name, kernel_stream)
    return notes


def _flush_kernel_streams() -> None:
    # ipykernel 7 buffers by parent: writes the agent made to the kernel's stream itself (a
    # logging handler holding it) carry our parent and must be flushed while we still divert.
    for stream in _kernel_streams.values():
        if getattr(stream, "_flush_pending", False):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a broken stream must not hide the agent's result
                pass


class _FdOutput:
    """Output written to the process's file descriptors during an agent run is the agent's.

    ipykernel points fds 1 and 2 at pipes that a watcher thread per stream reads into the
    kernel's stream, stamped with the last request's parent: ``os.system``, a subprocess that
    inherits the fds and C code printing all landed in the user's last cell. While a capture is
    open, what those watcher threads read goes to the capture instead (a user's background
    subprocess writing meanwhile too: fds are process-wide).

    A child's output can still be in the pipe when the agent's code returns. When a child
    process ended during the run (its page faults show in ``RUSAGE_CHILDREN``) or fd output was
    seen, a marker is written behind it and the run waits (briefly) until the watcher reads it.
    """

    MARKER = "\x1b]ipymcp-drained\x07"  # an OSC sequence: invisible on a terminal the kernel echoes to
    DRAIN_TIMEOUT = 1.0

    def __init__(self, capture: Capture):
        self.capture = capture
        self.saw_output = False
        # (stream, name, fd, our write, the instance's own write before ours: IPython 9 leaves one)
        self._installed: list[tuple[Any, str, int, Any, Any]] = []
        self._draining: dict[str, threading.Event] = {}
        self._children = _children_page_faults()
        for name, stream in _kernel_streams.items():
            watcher = getattr(stream, "watch_fd_thread", None)
            if watcher is None or not watcher.is_alive():
                continue
            fd = getattr(stream, "_original_stdstream_fd", {"stdout": 1, "stderr": 2}[name])
            previous = vars(stream).get("write")
            stream.write = self._writer(stream.write, name, watcher.ident)
            self._installed.append((stream, name, fd, stream.write, previous))

    def _writer(self, original: Callable[[str], Any], name: str, watcher: int | None) -> Callable[[str], Any]:
        def write(text: str) -> Any:
            if threading.get_ident() != watcher or not self.capture.open:
                return original(text)
            drained = self._draining.get(name)
            if drained is not None and self.MARKER in text:
                ours, _, later = text.partition(self.MARKER)
                if ours:
                    self.capture.stream(name, ours)
                drained.set()
                return original(later) if later else len(text)
            self.saw_output = True
            self.capture.stream(name, text)
            return len(text)

        return write

    def close(self) -> None:
        try:
            if self._installed and (self.saw_output or _children_page_faults() != self._children):
                self._drain()
        finally:
            for stream, _name, _fd, ours, previous in self._installed:
                if vars(stream).get("write") is ours:
                    if previous is not None:
                        stream.write = previous
                    else:
                        del stream.write
            self._installed.clear()

    def _drain(self) -> None:
        import os
        import time

        for _stream, name, fd, _ours, _previous in self._installed:
            self._draining[name] = threading.Event()
            try:
                os.write(fd, self.MARKER.encode())
            except OSError:
                self._draining[name].set()
        deadline = time.monotonic() + self.DRAIN_TIMEOUT
        for drained in self._draining.values():
            drained.wait(max(0.0, deadline - time.monotonic()))


def _children_page_faults() -> int:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    except Exception:  # noqa: BLE001 - no resource module (Windows): drain only after fd output
        return 0


# -- stdin ------------------------------------------------------------------------------------------
def _refuse_input() -> tuple[Any, Any]:
    saved = (builtins.input, getpass.getpass)
    builtins.input = _refusing(saved[0], "input()")
    getpass.getpass = _refusing(saved[1], "getpass()")
    return saved


def _refusing(original: Callable[..., Any], what: str) -> Callable[..., Any]:
    def refuse_in_agent_code(*args: Any, **kwargs: Any) -> Any:
        if _active.get() is not None:
            raise _stdin_error(what)
        return original(*args, **kwargs)  # a user's background thread meanwhile

    refuse_in_agent_code.__ipymcp_original__ = original  # type: ignore[attr-defined]
    return refuse_in_agent_code


def _restore_input(saved: tuple[Any, Any] | None) -> None:
    if saved is None:
        return
    if getattr(builtins.input, "__ipymcp_original__", None) is saved[0]:
        builtins.input = saved[0]
    if getattr(getpass.getpass, "__ipymcp_original__", None) is saved[1]:
        getpass.getpass = saved[1]


def _stdin_error(what: str) -> Exception:
    from IPython.core.error import StdinNotImplementedError

    return StdinNotImplementedError(NO_INPUT.format(what=what))


# -- tracebacks ---------------------------------------------------------------------------------------
def _traceback_lines(stb: Any) -> list[str]:
    """A traceback as a list of strings, whatever a shell or handler passed (never raises)."""
    if stb is None:
        return []
    if isinstance(stb, str):
        return [stb]
    inner = getattr(stb, "stb", None)  # Colab's ColabTraceback wraps the list
    if inner is not None and not isinstance(stb, (list, tuple)):
        stb = inner
    try:
        return [line if isinstance(line, str) else str(line) for line in stb]
    except Exception:  # noqa: BLE001 - not iterable, or iterating it failed
        return [str(stb)]


# -- hooks installed for the runtime's lifetime -------------------------------------------------------
class CaptureHooks:
    """The session tap that diverts agent messages, and the refusal of ``exit_now``."""

    def __init__(self, shell: Any):
        self.shell = shell
        self._session: Any = None
        self._send: Any = None
        self._previous_send: Any = None
        self._validator: Any = None
        self._previous_validator: Any = None

    def install(self) -> None:
        if self._send is None:
            self._install_session_tap()
        if self._validator is None:
            self._install_exit_guard()

    def uninstall(self) -> None:
        session, send = self._session, self._send
        self._session = self._send = None
        if session is not None and vars(session).get("send") is send:
            if self._previous_send is not None:
                session.send = self._previous_send
            else:
                del session.send
        validators = getattr(self.shell, "_trait_validators", {})
        if self._validator is not None and validators.get("exit_now") is self._validator:
            if self._previous_validator is not None:
                validators["exit_now"] = self._previous_validator
            else:
                del validators["exit_now"]
        self._validator = None

    def _install_session_tap(self) -> None:
        session = getattr(getattr(self.shell, "kernel", None), "session", None)
        if session is None:
            return
        self._previous_send = vars(session).get("send")
        self._session, self._send = session, _divert_agent_messages(session, session.send)
        session.send = self._send

    def _install_exit_guard(self) -> None:
        # traitlets has no public per-instance validator; _register_validator is what
        # @validate uses under the hood. A refused exit_now never reaches ipykernel's observer,
        # which would stop the kernel's event loop.
        register = getattr(self.shell, "_register_validator", None)
        if register is None:
            return
        previous = getattr(self.shell, "_trait_validators", {}).get("exit_now")

        def refuse_exit_in_agent_code(obj: Any, proposal: Any) -> Any:
            if proposal.value and _active.get() is not None:
                from traitlets import TraitError

                raise TraitError(EXIT_REFUSED)
            return previous(obj, proposal) if previous is not None else proposal.value

        register(refuse_exit_in_agent_code, ["exit_now"])
        self._validator, self._previous_validator = refuse_exit_in_agent_code, previous


def _divert_agent_messages(session: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``session.send``: messages stamped with an agent parent go to that agent's capture."""

    def send(
        stream: Any,
        msg_or_type: Any,
        content: Any = None,
        parent: Any = None,
        ident: Any = None,
        buffers: Any = None,
        track: bool = False,
        header: Any = None,
        metadata: Any = None,
    ) -> Any:
        if _diverted:
            is_msg = isinstance(msg_or_type, dict)
            msg_type = msg_or_type["header"]["msg_type"] if is_msg else msg_or_type
            if msg_type == "input_request" and _active.get() is not None:
                raise _stdin_error("Reading input (a stdin request to the frontend)")
            parent_header = msg_or_type.get("parent_header") if is_msg else _header_of(parent)
            capture = _diverted.get((parent_header or {}).get("msg_id", ""))
            if capture is not None and msg_type not in _PASS_THROUGH:
                if (
                    msg_type != "stream"
                    and threading.get_ident() != capture._thread_ident
                    and capture._parent
                ):
                    # ipykernel 6's process-wide parent stamped another thread's display: theirs.
                    user_parent = capture._parent.user_header
                    if is_msg:
                        msg_or_type = {**msg_or_type, "parent_header": user_parent}
                    else:
                        parent = user_parent
                else:
                    msg = msg_or_type if is_msg else session.msg(msg_type, content, parent, header, metadata)
                    capture.receive(msg)
                    return None  # never sent: nothing reaches the notebook, or the history tap
        return original(
            stream,
            msg_or_type,
            content=content,
            parent=parent,
            ident=ident,
            buffers=buffers,
            track=track,
            header=header,
            metadata=metadata,
        )

    send.__ipymcp_capture__ = True  # type: ignore[attr-defined]
    return send
