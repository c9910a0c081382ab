"""Capture the outputs of code run on one thread, without stealing anybody else's.

``IPython.utils.capture.capture_output`` swaps process-wide objects: output printed by a user's
background thread meanwhile would vanish into the agent's capture. Instead:

* while a capture is active, ``sys.stdout``/``sys.stderr`` are a router that sends writes from
  the capturing thread to the capture, and everything else (a user's background thread) to the
  kernel's own stream. Outside agent runs the kernel's streams are left in place: a router on
  every write made a print-heavy user cell ~25% slower;
* ``display_pub.register_hook`` hooks are already thread-local in ipykernel;
* ``displayhook.finish_displayhook`` and ``shell._showtraceback`` are wrapped, because the
  displayhook hook API only exists from ipykernel 7.3 and tracebacks bypass display hooks.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from ..outputs import encode_binary

_local = threading.local()


class _Router:
    # Not an io.TextIOBase subclass: that shadowed OutStream's .encoding and .fileno().
    def __init__(self, original: Any, name: str):
        self._original = original
        self._name = name

    def write(self, text: str) -> int:
        capture = getattr(_local, "capture", None)
        if capture is not None:
            capture.stream(self._name, text)
            return len(text)
        return self._original.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if getattr(_local, "capture", None) is None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class Capture:
    """``with Capture() as cap: ...`` collects nbformat-like output dicts in ``cap.outputs``."""

    def __init__(self, shell: Any):
        self.shell = shell
        self.outputs: list[dict[str, Any]] = []

    def stream(self, name: str, text: str) -> None:
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["_parts"].append(text)
        else:
            self.outputs.append({"output_type": "stream", "name": name, "_parts": [text]})

    def display(self, msg: dict[str, Any]) -> None:
        msg_type = msg["header"]["msg_type"]
        content = msg["content"]
        if msg_type == "clear_output":
            if not content.get("wait"):
                self.outputs.clear()
            else:
                self.outputs.append({"output_type": "clear_output"})
            return
        if msg_type not in ("display_data", "update_display_data"):
            return
        entry = {
            "output_type": "display_data",
            "data": encode_binary(content.get("data", {})),
            "metadata": content.get("metadata", {}),
        }
        display_id = (content.get("transient") or {}).get("display_id")
        if display_id:
            entry["display_id"] = display_id
            if msg_type == "update_display_data":
                for i, old in enumerate(self.outputs):
                    if old.get("display_id") == display_id:
                        self.outputs[i] = entry
                return
        self._apply_wait_clear()
        self.outputs.append(entry)

    def _apply_wait_clear(self) -> None:
        # clear_output(wait=True) clears when the next output arrives
        for i in range(len(self.outputs) - 1, -1, -1):
            if self.outputs[i]["output_type"] == "clear_output":
                del self.outputs[: i + 1]
                return

    def result(self, content: dict[str, Any]) -> None:
        self._apply_wait_clear()
        self.outputs.append(
            {
                "output_type": "execute_result",
                "data": encode_binary(content.get("data", {})),
                "metadata": content.get("metadata", {}),
                "execution_count": content.get("execution_count"),
            }
        )

    def error(self, ename: str, evalue: str, traceback: list[str]) -> None:
        self.outputs.append({"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback})

    def finish(self) -> list[dict[str, Any]]:
        """The outputs with streams joined; call once capture has ended."""
        done = []
        for out in self.outputs:
            if out["output_type"] == "stream":
                out = {"output_type": "stream", "name": out["name"], "text": "".join(out["_parts"])}
            elif out["output_type"] == "clear_output":
                continue
            done.append(out)
        return done

    # display_pub hook: returning None suppresses the message (nothing shows in the notebook)
    def _hook(self, msg: dict[str, Any]) -> None:
        self.display(msg)
        return None

    def __enter__(self) -> Capture:
        if getattr(_local, "capture", None) is not None:
            raise RuntimeError("a capture is already active on this thread")
        _local.capture = self
        _route_streams()
        self.shell.display_pub.register_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.shell.display_pub.unregister_hook(self._hook)
        finally:
            _local.capture = None
            _unroute_streams()


_routing_lock = threading.Lock()
_routing_depth = 0


def _route_streams() -> None:
    global _routing_depth
    with _routing_lock:
        _routing_depth += 1
        if _routing_depth == 1:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if not isinstance(stream, _Router):
                    setattr(sys, name, _Router(stream, name))


def _unroute_streams() -> None:
    global _routing_depth
    with _routing_lock:
        _routing_depth = max(0, _routing_depth - 1)
        if _routing_depth == 0:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                # if the agent's code replaced sys.stdout itself, leave its choice alone
                if isinstance(stream, _Router):
                    setattr(sys, name, stream._original)


def active_capture() -> Capture | None:
    return getattr(_local, "capture", None)


class CaptureHooks:
    """Installs (and removes) the shell hooks that route results and errors to a ``Capture``."""

    def __init__(self, shell: Any):
        self.shell = shell
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        shell = self.shell
        original_finish = shell.displayhook.finish_displayhook
        original_showtraceback = shell._showtraceback

        def finish_displayhook() -> Any:
            capture = active_capture()
            hook = shell.displayhook
            if capture is not None and getattr(hook, "msg", None):
                capture.result(hook.msg["content"])
                hook.msg = None
                return None
            return original_finish()

        def _showtraceback(etype: Any, evalue: Any, stb: list[str]) -> Any:
            capture = active_capture()
            if capture is not None:
                capture.error(getattr(etype, "__name__", str(etype)), str(evalue), list(stb))
                shell._last_traceback = stb
                return None
            return original_showtraceback(etype, evalue, stb)

        # Instance attributes shadow the class methods; uninstall deletes them.
        shell.displayhook.finish_displayhook = finish_displayhook
        shell._showtraceback = _showtraceback
        self._installed = True

    def uninstall(self) -> None:
        if not self._installed:
            return
        for obj, attr in ((self.shell.displayhook, "finish_displayhook"), (self.shell, "_showtraceback")):
            if attr in vars(obj):
                delattr(obj, attr)
        self._installed = False
