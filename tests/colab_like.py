"""A stand-in for Google Colab's kernel, for tests: Colab itself cannot run here.

``google.colab`` needs Colab's frontend and backend, so the tests start a kernel with this
``Kernel`` (``--IPKernelApp.kernel_class=colab_like.Kernel``) instead. It does what the parts of
colabtools that ipymcp meets do (read in googlecolab/colabtools at HEAD, April 2026):

* ``google/colab/_shell.py`` ``Shell._showtraceback``: the traceback may be a ``ColabTraceback``
  *object* (not a list), unwrapped before the ``error`` message is sent by ``_send_error``;
* ``google/colab/_shell_customizations.py`` ``_CustomErrorHandlers``: ``shell.set_custom_exc``
  for ImportError, whose handler calls ``showtraceback`` with an exception whose
  ``_render_traceback_`` returns that object and adds a NOTE about installing packages;
* ``google/colab/_message.py`` ``send_request`` / ``read_reply_from_input``: ``colab_request``
  IOPub messages, replies read from the stdin socket (``eval_js`` waits for one, with no timeout);
* ``google/colab/output/_js.py`` ``eval_js``: the request's parent is ``shell.parent_header``;
* ``google/colab/output/_tags.py`` ``use_tags`` / ``temporary`` / ``clear``: tags announced with a
  ``nodisplay`` display_data; ``clear`` sends ``clear_output`` (with ``output_tags``) straight
  through the session, past the display hooks;
* ``google/colab/_system_commands.py``: ``!cmd``, ``x = !cmd`` and ``%shell`` show a stdin widget
  with ``colab_request`` messages parented to ``shell.parent_header``; ``x = !cmd`` wraps the
  command in ``temporary()``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from ipykernel.jsonutil import json_clean
from ipykernel.zmqshell import ZMQInteractiveShell
from IPython.display import publish_display_data
from IPython.utils import text
from traitlets import default

IMPORT_NOTE = (
    "NOTE: If your import is failing due to a missing package, you can manually install dependencies"
)


# -- google/colab/_shell_customizations.py --------------------------------------------------------
class ColabTraceback:
    def __init__(self, stb: list[str], error_details: dict[str, Any]):
        self.stb = stb
        self.error_details = error_details


class FormattedTracebackError(Exception):
    def __init__(self, message: str, stb: list[str], details: dict[str, Any]):
        super().__init__(message)
        self._colab_traceback = ColabTraceback(stb, details)

    def _render_traceback_(self) -> ColabTraceback:
        return self._colab_traceback


def handle_import_error(shell: Any, etype: Any, exception: Any, tb: Any, tb_offset: Any = None) -> Any:
    stb = shell.InteractiveTB.structured_traceback(etype, exception, tb, tb_offset=tb_offset)
    stb += ["", IMPORT_NOTE + " using either !pip or !apt."]
    details = {"actions": [{"action": "open_url", "action_text": "Open Examples"}]}
    wrapped = FormattedTracebackError(str(exception), stb, details)
    return shell.showtraceback(exc_tuple=(etype, wrapped, tb))


# -- google/colab/_shell.py ------------------------------------------------------------------------
class Shell(ZMQInteractiveShell):
    def _send_error(self, exc_content: dict[str, Any]) -> None:
        topic = self.displayhook.topic.replace(b"execute_result", b"err") if self.displayhook.topic else None
        self.displayhook.session.send(
            self.displayhook.pub_socket,
            "error",
            json_clean(exc_content),
            self.displayhook.parent_header,
            ident=topic,
        )

    def _showtraceback(self, etype: Any, evalue: Any, stb: Any) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        error_details = None
        if isinstance(stb, ColabTraceback):
            error_details = stb.error_details
            stb = stb.stb
        exc_content = {"traceback": stb, "ename": str(etype.__name__), "evalue": str(evalue)}
        if error_details:
            exc_content["error_details"] = error_details
        self._send_error(exc_content)
        self._last_traceback = stb

    def system(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        result = _run_command(self.var_expand(cmd, depth=2), clear_streamed_output=False)
        self.user_ns["_exit_code"] = result.returncode

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0) -> Any:
        result = _run_command(self.var_expand(cmd, depth=depth + 2), clear_streamed_output=True)
        return text.SList(result.output.splitlines()) if split else text.LSString(result.output)


# -- google/colab/_kernel.py -----------------------------------------------------------------------
class Kernel(IPythonKernel):
    @default("shell_class")
    def _shell_class_default(self) -> type:
        return Shell

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.shell.set_custom_exc((ImportError,), handle_import_error)
        self.shell.register_magic_function(_shell_line_magic, magic_kind="line", magic_name="shell")


# -- google/colab/_message.py ----------------------------------------------------------------------
_msg_id = 0


def _kernel() -> Any:
    from IPython import get_ipython

    return get_ipython().kernel


def send_request(request_type: str, request_body: Any, parent: Any = None, expect_reply: bool = True) -> Any:
    global _msg_id
    kernel = _kernel()
    metadata: dict[str, Any] = {"colab_request_type": request_type}
    request_id = None
    if expect_reply:
        _msg_id += 1
        request_id = _msg_id
        metadata["colab_msg_id"] = request_id
    if parent is None:
        parent_header = kernel.shell.parent_header
        if parent_header:
            parent = {"header": {"session": parent_header["header"]["session"]}}
    msg = kernel.session.msg(
        "colab_request", content={"request": request_body}, metadata=metadata, parent=parent
    )
    kernel.session.send(kernel.iopub_socket, msg)
    return request_id


def read_reply_from_input(message_id: int, timeout_sec: float | None = None) -> Any:
    import zmq

    kernel = _kernel()
    deadline = time.time() + timeout_sec if timeout_sec else None
    while not deadline or time.time() < deadline:
        try:
            _, reply = kernel.session.recv(kernel.stdin_socket, zmq.NOBLOCK)
        except Exception:  # noqa: BLE001 - Colab treats invalid messages as empty replies
            reply = None
        value = (reply or {}).get("content", {}).get("value", "")
        if (
            isinstance(value, dict)
            and value.get("type") == "colab_reply"
            and value.get("colab_msg_id") == message_id
        ):
            return value.get("data")
        time.sleep(0.025)
    return None


# -- google/colab/output/_js.py --------------------------------------------------------------------
def eval_js(script: str, ignore_result: bool = False, timeout_sec: float | None = None) -> Any:
    request_id = send_request(
        "cell_javascript_eval", {"script": script}, parent=_kernel().shell.parent_header
    )
    if ignore_result:
        return None
    return read_reply_from_input(request_id, timeout_sec)


# -- google/colab/output/_tags.py ------------------------------------------------------------------
_tls = threading.local()


def _tags() -> set[str]:
    if not hasattr(_tls, "tags"):
        _tls.tags = set()
    return _tls.tags


def _add_or_remove_tags(tags_to_add: Any = (), tags_to_remove: Any = ()) -> set[str]:
    tags = _tags()
    tags.update(tags_to_add)
    tags.difference_update(tags_to_remove)
    sys.stdout.flush()
    sys.stderr.flush()
    metadata = {
        "outputarea": {
            "nodisplay": True,
            "add_tags": tuple(tags_to_add),
            "remove_tags": tuple(tags_to_remove),
        }
    }
    publish_display_data({}, metadata=metadata)
    return tags


@contextlib.contextmanager
def use_tags(tags: Any, append: bool = True) -> Any:
    tags = [tags] if isinstance(tags, str) else tags
    current = set(_tags())
    added = set(tags).difference(current)
    removed = [] if append else current.difference(tags)
    try:
        yield _add_or_remove_tags(tags_to_add=added, tags_to_remove=removed)
    finally:
        _add_or_remove_tags(tags_to_add=removed, tags_to_remove=added)


def clear(wait: bool = False, output_tags: Any = ()) -> None:
    output_tags = [output_tags] if isinstance(output_tags, str) else output_tags
    sys.stdout.flush()
    sys.stderr.flush()
    kernel = _kernel()
    display_pub = kernel.shell.display_pub
    kernel.session.send(
        display_pub.pub_socket,
        "clear_output",
        {"wait": wait, "output_tags": tuple(output_tags)},
        parent=display_pub.parent_header,
        ident=display_pub.topic,
    )


@contextlib.contextmanager
def temporary() -> Any:
    temptag = str(uuid.uuid4())
    with use_tags(temptag):
        yield temptag
    clear(output_tags=temptag)


# -- google/colab/_system_commands.py --------------------------------------------------------------
class ShellResult:
    def __init__(self, args: str, returncode: int, output: str):
        self.args, self.returncode, self.output = args, returncode, output

    def check_returncode(self) -> None:
        if self.returncode:
            raise subprocess.CalledProcessError(self.returncode, self.args, self.output)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        del p, cycle  # the output was streamed already


@contextlib.contextmanager
def _display_stdin_widget(delay_millis: int = 0) -> Any:
    parent = _kernel().shell.parent_header
    send_request("cell_display_stdin", {"delayMillis": delay_millis}, parent=parent, expect_reply=False)
    yield
    send_request("cell_remove_stdin", {}, parent=parent, expect_reply=False)


def _run_command(cmd: str, clear_streamed_output: bool) -> ShellResult:
    clearer = temporary if clear_streamed_output else contextlib.nullcontext
    with clearer(), _display_stdin_widget(delay_millis=500):
        process = subprocess.run(
            cmd,
            shell=True,
            executable="/bin/bash",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sys.stdout.write(process.stdout)
        sys.stdout.flush()
    return ShellResult(cmd, process.returncode, process.stdout)


def _shell_line_magic(line: str) -> ShellResult:
    result = _run_command(line, clear_streamed_output=False)
    result.check_returncode()
    return result
