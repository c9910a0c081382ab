"""Agent code execution on the main thread: ``quiet`` (leaves no trace) and ``cell`` modes.

``quiet`` is our own exec: ``transform_cell`` (magics, ``!cmd``), ``compile.cache`` (so
tracebacks show the source), top-level ``await``, the value of a final expression, and inline
matplotlib figures flushed like a cell would. It never touches ``In``/``Out``/``_``, history or
the ``pre/post_run_cell`` events. ``cell`` is ``run_cell_async(store_history=True)``: it takes an
execution count and lands in ``In``/``Out`` like a user cell.
"""

from __future__ import annotations

import ast
import inspect
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .capture import Capture
from .mainthread import AgentJob

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


@dataclass
class ExecutionResult:
    outputs: list[dict[str, Any]] = field(default_factory=list)
    status: Literal["ok", "error", "interrupted"] = "ok"
    execution_count: int | None = None
    duration: float = 0.0
    # What ipymcp undid after the code ran (a replaced sys.stdout…), in sentences for the agent.
    notes: list[str] = field(default_factory=list)


async def run_agent_code(
    shell: Any, code: str, job: AgentJob, mode: str = "quiet", max_output_chars: int = 20_000
) -> ExecutionResult:
    """Run ``code`` with its outputs captured; call on the kernel main thread (via the MainThreadExecutor).

    ``max_output_chars`` is the answer's text budget: longer streams are cut while capturing.
    """
    started = time.monotonic()
    result = ExecutionResult()
    original_ask_exit = shell.ask_exit
    # exit()/quit() from the agent would shut the user's kernel down.
    shell.ask_exit = _refuse_exit
    try:
        with Capture(shell, max_output_chars) as capture:
            try:
                if mode == "cell":
                    result.execution_count = await _run_as_cell(shell, code, job, capture)
                else:
                    await _run_quiet(shell, code, job, capture)
            except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt, SystemExit, CancelledError too
                _record_exception(shell, exc, capture, job)
            finally:
                _flush_inline_figures()
                _flush_streams()
    finally:
        shell.ask_exit = original_ask_exit
        if "ask_exit" in vars(shell) and shell.ask_exit is original_ask_exit:
            del shell.ask_exit
    result.outputs = capture.finish()
    result.notes = capture.notes
    if any(o["output_type"] == "error" for o in result.outputs):
        result.status = "interrupted" if job.interrupted or _was_interrupted(result.outputs) else "error"
    result.duration = time.monotonic() - started
    return result


def _refuse_exit(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("exit()/quit() is not allowed from an agent: it would shut down the user's kernel")


async def _run_quiet(shell: Any, code: str, job: AgentJob, capture: Capture) -> None:
    cell = shell.transform_cell(code) if _may_need_transform(code) else code
    filename = shell.compile.cache(cell)
    job.code_filenames.add(filename)
    flags = shell.compile.flags | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    tree = ast.parse(cell, filename)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    namespace = shell.user_ns
    if tree.body:
        body = compile(tree, filename, "exec", flags=flags, dont_inherit=True)
        outcome = eval(body, shell.user_global_ns, namespace)  # noqa: S307 - this is the agent's code
        if body.co_flags & inspect.CO_COROUTINE:
            await outcome
    if last is not None:
        expr = compile(ast.Expression(last.value), filename, "eval", flags=flags, dont_inherit=True)
        value = eval(expr, shell.user_global_ns, namespace)  # noqa: S307
        if expr.co_flags & inspect.CO_COROUTINE:
            value = await value
        if value is not None and not _ends_with_semicolon(cell):
            data, metadata = _format(shell, value)
            capture.result({"data": data, "metadata": metadata, "execution_count": None})


async def _run_as_cell(shell: Any, code: str, job: AgentJob, capture: Capture) -> int:
    transformed = shell.transform_cell(code)
    job.code_filenames.add(shell.compile.cache(transformed, shell.execution_count))
    runner = shell.run_cell_async
    kwargs: dict[str, Any] = {"store_history": True, "silent": False}
    if "transformed_cell" in inspect.signature(runner).parameters:
        kwargs["transformed_cell"] = transformed
    count = shell.execution_count
    outcome = await runner(code, **kwargs)
    # run_cell reports errors through the shell's own _showtraceback (its message is captured);
    # a custom exception handler may report one without an error message: say it failed anyway.
    failure = outcome.error_before_exec or outcome.error_in_exec
    if failure is not None and not any(o["output_type"] == "error" for o in capture.outputs):
        capture.error(type(failure).__name__, str(failure), [f"{type(failure).__name__}: {failure}"])
    return count


def _may_need_transform(code: str) -> bool:
    """False only for plain Python that IPython's input transformers leave unchanged.

    Transforming costs more than the rest of a small execute; the markers are magics and shell
    escapes (% !), help (?), pasted prompts (>>> In [) and an indented first line.
    """
    if any(marker in code for marker in ("%", "!", "?", ">>>", "In [", "...:")):
        return True
    first = next((line for line in code.splitlines() if line.strip()), "")
    return first[:1] in (" ", "\t")


def _format(shell: Any, value: Any) -> tuple[dict, dict]:
    # The full formatter (a dozen mime types probed) is the largest cost of execute("1+1"); an int
    # whose printer is IPython's default one is just its repr.
    if type(value) in (int, bool):
        from IPython.lib.pretty import _repr_pprint

        printers = shell.display_formatter.formatters["text/plain"].type_printers
        if printers.get(type(value), _repr_pprint) is _repr_pprint:
            return {"text/plain": repr(value)}, {}
    return shell.display_formatter.format(value)


def _ends_with_semicolon(cell: str) -> bool:
    return cell.rstrip().endswith(";")


def _record_exception(shell: Any, exc: BaseException, capture: Capture, job: AgentJob) -> None:
    etype, evalue, tb = type(exc), exc, exc.__traceback__
    if isinstance(exc, KeyboardInterrupt) or (job.interrupted and _is_cancel(exc)):
        etype, evalue = KeyboardInterrupt, KeyboardInterrupt("agent code interrupted")
        tb = exc.__traceback__
    # Skip our own frames so the traceback starts at the agent's code and ends in it (the
    # interrupt handler that raised KeyboardInterrupt is ours too).
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    link = tb
    while link is not None and link.tb_next is not None:
        if link.tb_next.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            link.tb_next = None
            break
        link = link.tb_next
    try:
        stb = shell.InteractiveTB.structured_traceback(etype, evalue, tb)
    except Exception:  # noqa: BLE001
        import traceback

        stb = traceback.format_exception(etype, evalue, tb)
    capture.error(etype.__name__, str(evalue), list(stb))


def _is_cancel(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, asyncio.CancelledError)


def _was_interrupted(outputs: list[dict[str, Any]]) -> bool:
    return any(o["output_type"] == "error" and o.get("ename") == "KeyboardInterrupt" for o in outputs)


def _flush_inline_figures() -> None:
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    if backend is None:
        return
    try:
        backend.flush_figures()
    except Exception:  # noqa: BLE001 - a broken figure must not hide the agent's result
        pass


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
