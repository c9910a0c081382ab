"""ipymcp in Colab's kernel, played by ``tests/colab_like.py``.

Colab's kernel (``google.colab._kernel.Kernel`` + ``google.colab._shell.Shell``), its frontend
and the ``google.colab`` package cannot run here; ``colab_like`` is a kernel class that does what
theirs does where ipymcp meets it (traceback objects from the ImportError handler, colab_request
messages parented to the last cell, clear_output sent past the display hooks, tagged clears).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from colab_like import IMPORT_NOTE
from conftest import KernelHarness, text_of
from test_quiet_mode import REAL_KERNEL_ENV, frontend_messages, leaked_outputs

pytestmark = pytest.mark.compat

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def colab() -> KernelHarness:
    harness = KernelHarness(
        env={"PYTHONPATH": str(TESTS), **REAL_KERNEL_ENV},
        extra_arguments=["--IPKernelApp.kernel_class=colab_like.Kernel"],
    )
    harness.load_ipymcp()
    yield harness
    harness.shutdown()


def test_the_stand_in_behaves_like_colab(colab):
    user = colab.run("import no_such_module_before", allow_error=True)
    assert user["status"] == "error"
    errors = [m for m in user["outputs"] if m["msg_type"] == "error"]
    assert errors and IMPORT_NOTE in "\n".join(errors[0]["content"]["traceback"])


async def test_cell_mode_import_error_is_reported_and_colabs_handler_survives(colab):
    async with colab.client() as c:
        result = await c.call_tool("execute", {"code": "import no_such_module_for_the_agent", "mode": "cell"})
    assert result.is_error and result.meta["status"] == "error"
    text = text_of(result)
    assert "ModuleNotFoundError" in text and "no_such_module_for_the_agent" in text and IMPORT_NOTE in text
    assert "Custom TB Handler failed" not in text
    # The user's later ImportErrors still get Colab's note: the handler was not unregistered.
    user = colab.run("import no_such_module_after", allow_error=True)
    errors = [m for m in user["outputs"] if m["msg_type"] == "error"]
    assert errors and IMPORT_NOTE in "\n".join(errors[0]["content"]["traceback"])
    assert "ImportError" in colab.run("print(get_ipython().custom_exceptions)")["stdout"]


async def test_eval_js_from_the_agent_fails_fast(colab):
    frontend_messages(colab)
    async with colab.client() as c:
        started = time.monotonic()
        result = await c.call_tool(
            "execute", {"code": "import colab_like\ncolab_like.eval_js('1 + 1')", "timeout": 20}
        )
        elapsed = time.monotonic() - started
    assert result.is_error and elapsed < 10
    assert "eval_js" in text_of(result) or "frontend" in text_of(result)
    assert "agent" in text_of(result)
    assert leaked_outputs(frontend_messages(colab)) == []


async def test_shell_commands_and_output_clear_stay_out_of_the_users_cell(colab):
    colab.run("print('the user keeps this')")
    frontend_messages(colab)
    async with colab.client() as c:
        shell = await c.call_tool("execute", {"code": "!echo from-bang\n%shell echo from-magic"})
        captured = await c.call_tool("execute", {"code": "lines = !echo captured-line\nlines"})
        cleared = await c.call_tool(
            "execute", {"code": "import colab_like\nprint('gone')\ncolab_like.clear()\nprint('kept')"}
        )
    assert "from-bang" in text_of(shell) and "from-magic" in text_of(shell)
    assert "captured-line" in text_of(captured) and "output of type" not in text_of(captured)
    assert text_of(cleared) == "kept\n"
    assert leaked_outputs(frontend_messages(colab)) == []


async def test_a_tagged_clear_removes_only_the_tagged_agent_outputs(colab):
    code = (
        "import colab_like\n"
        "print('before')\n"
        "with colab_like.use_tags('step'):\n"
        "    print('tagged')\n"
        "print('after')\n"
        "colab_like.clear(output_tags='step')"
    )
    async with colab.client() as c:
        result = await c.call_tool("execute", {"code": code})
    assert text_of(result) == "before\nafter\n"
