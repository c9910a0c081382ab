"""The proxy of ``ipymcp connect``: a stdio MCP server (downstream, both protocol eras) that
forwards every request to the kernel chosen by ``selection`` through an ``upstream`` connection,
reconnects after restarts, and adds its own two tools, list_notebooks and select_notebook."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ServerEvent,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter

from .._version import __version__
from ..server import discovery
from ..text import report_progress
from ..tools.results import NotebookList, NotebookSelected
from .selection import (
    WAIT_ADVICE,
    Binding,
    ConnectError,
    NotebookAway,
    Selection,
    choose_kernel,
    describe_kernel,
)
from .upstream import CONNECT_TIMEOUT, ConnectionLost, Upstream, downstream_request, root_cause

log = logging.getLogger("ipymcp.connect")

# Bounded waits: an agent must get an answer, never a hang, while a kernel restarts.
STATUS_TIMEOUT = 8.0  # a kernel's first kernel_status call can take seconds (imports)
POLL_INTERVAL = 2.0
RESTART_TIMEOUT = 90.0  # restart_kernel: the new kernel starts and loads ipymcp again

_T = TypeVar("_T")

PROXY_INSTRUCTIONS = """\
You reach the notebook through `ipymcp connect`. {chosen} list_notebooks shows every notebook \
kernel with ipymcp loaded; select_notebook(notebook or kernel_id) sends the following calls to \
another one. Calls stay with the chosen notebook until you call select_notebook: if its kernel \
restarts, its variables are gone, and calls fail saying so (they did not run) until ipymcp is \
loaded in its new kernel; then they go there."""


def _lost_sentence(info: dict[str, Any], ran: str = "did not run") -> str:
    return (
        f"The kernel of {describe_kernel(info)} went away (it restarted or shut down): "
        f"its variables are gone and this call {ran}."
    )


# -- the proxy ---------------------------------------------------------------------------------


NOTEBOOK_SCHEMA = {
    "type": "object",
    "properties": {
        "notebook": {
            "type": "string",
            "description": "notebook path or file name (e.g. analysis.ipynb), as shown by list_notebooks",
        },
        "kernel_id": {"type": "string", "description": "kernel id, as shown by list_notebooks"},
    },
}


PROXY_TOOLS = [
    types.Tool(
        name="list_notebooks",
        title="List notebooks with ipymcp",
        description=(
            "List every running notebook kernel that has ipymcp loaded: notebook path, kernel id, "
            "when ipymcp started, busy/idle, and which one your calls currently go to (selected). "
            "Use select_notebook to switch. A notebook missing here needs `%load_ext ipymcp` run in it."
        ),
        input_schema={"type": "object", "properties": {}},
        output_schema=TypeAdapter(NotebookList).json_schema(),
        annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    ),
    types.Tool(
        name="select_notebook",
        title="Send calls to another notebook",
        description=(
            "Choose the notebook kernel that the following tool calls go to, by notebook path or file "
            "name, or by kernel id (see list_notebooks). Each notebook has its own variables. Returns "
            "the notebook now selected; on error, call list_notebooks to see the choices."
        ),
        input_schema=NOTEBOOK_SCHEMA,
        output_schema=TypeAdapter(NotebookSelected).json_schema(),
        annotations=types.ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
        ),
    ),
]
PROXY_TOOL_NAMES = {tool.name for tool in PROXY_TOOLS}


class Proxy:
    def __init__(self, selection: Selection, runtime_dir: Path | None = None):
        self.selection = selection
        self.runtime_dir = runtime_dir
        self.upstream: Upstream | None = None
        self.chosen_because = ""
        self.bus = InMemorySubscriptionBus()
        self._tg: anyio.abc.TaskGroup | None = None
        self._session: ServerSession | None = None
        self._switch_lock = anyio.Lock()
        # Set when the kernel went away by itself: the next call reports it once (its variables
        # are gone), even if the proxy has reconnected to the new server meanwhile.
        self._lost_notice: str | None = None
        self._last_problem: str | None = None
        # The notebook chosen first (or by select_notebook); re-discovery finds only it again.
        self.binding: Binding | None = None

    # -- connection management ------------------------------------------------------------------
    def kernels(self) -> list[dict[str, Any]]:
        return discovery.list_kernels(self.runtime_dir)

    async def connect(self, info: dict[str, Any], because: str) -> Upstream:
        """Open an upstream to ``info`` (bounded) and make it current; closes the previous one."""
        assert self._tg is not None
        upstream = Upstream(info, self._forward_event)
        with anyio.fail_after(CONNECT_TIMEOUT + 2):
            await self._tg.start(upstream.run)
        previous, self.upstream = self.upstream, upstream
        if previous is not None:
            previous.close()
        self.binding = Binding.of(info)
        self.chosen_because = because
        self._last_problem = None
        log.info("connected to %s (%s)", describe_kernel(info), because)
        self._tg.start_soon(self._watch, upstream)
        return upstream

    async def ensure_upstream(self) -> Upstream:
        """The live upstream, reconnecting (re-discovering) if there is none."""
        async with self._switch_lock:
            if self.upstream is not None and not self.upstream.dead.is_set():
                return self.upstream
            info, because = self._rediscover()
            if info is None and self._bound():
                raise NotebookAway(self.binding)  # type: ignore[arg-type]
            if info is None:
                raise ConnectError(
                    f"Not connected to a notebook: {because}. Run `%load_ext ipymcp` in the notebook "
                    "(or wait until its kernel has restarted and load it again), then retry; "
                    "list_notebooks shows the kernels that are ready."
                )
            try:
                return await self.connect(info, because)
            except (ConnectError, TimeoutError) as exc:
                raise ConnectError(f"{exc}. Retry in a moment; list_notebooks shows the kernels that are ready.") from exc

    def _bound(self) -> bool:
        return self.binding is not None and not self.selection.url

    def _rediscover(self) -> tuple[dict[str, Any] | None, str]:
        """Once a notebook was chosen, only that notebook (its restarted or new kernel); before, the
        documented order. ``--url`` always means that URL."""
        kernels = self.kernels()
        if not self._bound():
            return choose_kernel(kernels, self.selection)
        assert self.binding is not None
        info = self.binding.find(kernels)
        if info is None:
            return None, f"{self.binding.label} is restarting or was shut down"
        return info, f"the same notebook as before ({self.binding.label})"

    async def _watch(self, upstream: Upstream) -> None:
        """When the current upstream dies by itself, remember to tell the agent, and reconnect."""
        await upstream.dead.wait()
        if upstream is not self.upstream or upstream.loss_reported:
            return  # replaced on purpose (select_notebook), or the failing call already said so
        self._lost_notice = _lost_sentence(upstream.info)
        log.info("lost %s (%s)", describe_kernel(upstream.info), root_cause(upstream.error))
        await self._announce(ToolsListChanged(), PromptsListChanged(), ResourcesListChanged())

    async def _poll(self) -> None:
        """Without an upstream, connect as soon as a matching kernel loads ipymcp (clients that
        started before the notebook learn about the kernel's tools through list-changed)."""
        while True:
            await anyio.sleep(POLL_INTERVAL)
            if self.upstream is not None and not self.upstream.dead.is_set():
                continue
            info, _ = self._rediscover()
            if info is None:
                continue
            try:
                await self.ensure_upstream()
            except ConnectError as exc:
                if str(exc) != self._last_problem:
                    log.info("%s", exc)
                self._last_problem = str(exc)
                continue
            await self._announce(ToolsListChanged(), PromptsListChanged(), ResourcesListChanged())

    async def _forward_event(self, event: ServerEvent) -> None:
        await self._announce(event)

    async def _announce(self, *events: ServerEvent) -> None:
        """List-changed downstream, in both eras: listen streams (2026) and the session (2025)."""
        for event in events:
            await self.bus.publish(event)
        session = self._session
        if session is None or session.protocol_version in MODERN_PROTOCOL_VERSIONS:
            return
        senders = {
            ToolsListChanged: session.send_tool_list_changed,
            PromptsListChanged: session.send_prompt_list_changed,
            ResourcesListChanged: session.send_resource_list_changed,
        }
        for event in events:
            sender = senders.get(type(event))
            if sender is not None:
                try:
                    await sender()
                except Exception:  # noqa: BLE001 - the client left; nothing to tell
                    log.debug("could not send %s", type(event).__name__, exc_info=True)

    # -- forwarding ---------------------------------------------------------------------------
    async def forward(
        self, ctx: ServerRequestContext[Any], fn: Callable[[Client], Awaitable[_T]], *, is_call: bool = True
    ) -> _T:
        """Send one request upstream, reconnecting first if needed; errors are ConnectError sentences.

        Only calls (tools, resource reads, prompts) report a lost kernel, once. Listings never
        do: clients refetch them on list-changed, right after a restart, and they are retried once
        on the new server instead.
        """
        self._session = ctx.session
        if is_call and self._lost_notice is not None:
            notice, self._lost_notice = self._lost_notice, None
            raise ConnectError(f"{notice} {await self._where_calls_go_now()}")
        upstream = await self.ensure_upstream()
        try:
            return await upstream.call(fn)
        except ConnectionLost as exc:
            log.info("lost %s during a request (%s)", describe_kernel(upstream.info), exc)
            if not is_call:
                try:
                    return await (await self.ensure_upstream()).call(fn)
                except ConnectionLost as again:
                    raise ConnectError(str(again)) from again
            upstream.loss_reported = True  # this error is the one the agent gets
            self._lost_notice = None
            lost = _lost_sentence(upstream.info, ran="did not complete")
            raise ConnectError(f"{lost} {await self._where_calls_go_now()}") from exc

    async def _where_calls_go_now(self) -> str:
        """The second half of a lost-kernel error: the same notebook's new kernel, or why not yet."""
        try:
            upstream = await self.ensure_upstream()
        except NotebookAway:
            return f"ipymcp is not loaded in its new kernel yet. {WAIT_ADVICE}"
        except ConnectError as exc:
            return str(exc)
        return f"Calls go to {describe_kernel(upstream.info)} now; load your data again, then retry."

    async def list_notebooks(self) -> dict[str, Any]:
        current = self.upstream if self.upstream is not None and not self.upstream.dead.is_set() else None
        rows = []
        kernels = self.kernels()

        async def status_of(info: dict[str, Any], row: dict[str, Any]) -> None:
            row["state"] = await self._kernel_state(info, current)

        async with anyio.create_task_group() as tg:
            for info in kernels:
                row = {
                    "notebook_path": info.get("notebook_path"),
                    "kernel_id": info.get("kernel_id"),
                    "started": info.get("started"),
                    "cwd": info.get("cwd"),
                    "state": "unknown",
                    "selected": self._is_selected(info, current),
                }
                rows.append(row)
                tg.start_soon(status_of, info, row)
        result: dict[str, Any] = {"notebooks": rows}
        if current is None and self._bound():
            assert self.binding is not None
            result["selected"] = self.binding.label
            result["note"] = (
                f"calls go to {self.binding.label}, whose kernel is restarting or was shut down: they fail until "
                "ipymcp is loaded in its new kernel, or until you call select_notebook"
            )
        elif current is None:
            result["note"] = "no notebook selected yet: call select_notebook"
        elif not any(row["selected"] for row in rows):
            result["selected"] = describe_kernel(current.info)
        return result

    def _is_selected(self, info: dict[str, Any], current: Upstream | None) -> bool:
        if self._bound():
            assert self.binding is not None
            return self.binding.matches(info)
        return current is not None and info.get("url") == current.info.get("url")

    async def _kernel_state(self, info: dict[str, Any], current: Upstream | None) -> str:
        async def ask(client: Client) -> Any:
            return await client.call_tool("kernel_status", {})

        try:
            with anyio.fail_after(STATUS_TIMEOUT):
                if current is not None and info.get("url") == current.info.get("url"):
                    result = await current.call(ask)
                else:
                    headers = {"Authorization": f"Bearer {info['token']}"}
                    async with httpx2.AsyncClient(headers=headers, timeout=STATUS_TIMEOUT) as http:
                        async with Client(streamable_http_client(info["url"], http_client=http), cache=None) as c:
                            result = await ask(c)
        except TimeoutError:
            return f"no answer in {STATUS_TIMEOUT:.0f} s"
        except Exception:  # noqa: BLE001 - shown as unreachable; the row still helps
            log.debug("kernel_status of %s failed", info.get("url"), exc_info=True)
            return "unreachable"
        state = (result.structured_content or {}).get("state")
        return state if isinstance(state, str) else "unknown"

    async def select_notebook(self, notebook: str | None, kernel_id: str | None) -> dict[str, Any]:
        if not notebook and not kernel_id:
            raise ConnectError("Give notebook (a path or file name) or kernel_id; list_notebooks shows them.")
        wanted = Selection(notebook=notebook, kernel_id=kernel_id, cwd=self.selection.cwd)
        info, because = choose_kernel(self.kernels(), wanted)
        if info is None:
            raise ConnectError(f"{because}; call list_notebooks to see the notebooks you can select.")
        async with self._switch_lock:
            if self.upstream is None or self.upstream.info.get("url") != info.get("url") or self.upstream.dead.is_set():
                try:
                    await self.connect(info, f"selected by {because}")
                except (ConnectError, TimeoutError) as exc:
                    raise ConnectError(f"{exc}; call list_notebooks and try again.") from exc
            # From now on the proxy is bound to this notebook (connect set the binding), also
            # when it was started with --url.
            self.selection = Selection(
                notebook=info.get("notebook_path") or None, kernel_id=info.get("kernel_id"), cwd=self.selection.cwd
            )
            self.binding = Binding.of(info)
            self._lost_notice = None
        await self._announce(ToolsListChanged(), PromptsListChanged(), ResourcesListChanged())
        return {
            "selected": describe_kernel(info),
            "notebook_path": info.get("notebook_path"),
            "kernel_id": info.get("kernel_id"),
        }

    # -- the downstream server --------------------------------------------------------------------
    def instructions(self) -> str:
        if self.upstream is not None:
            chosen = f"Connected to {describe_kernel(self.upstream.info)} (chosen: {self.chosen_because})."
            upstream_text = self.upstream.client.instructions if self.upstream.client is not None else None
        else:
            chosen = f"Not connected to a notebook yet ({self._last_problem or 'none found'})."
            upstream_text = None
        proxy_text = PROXY_INSTRUCTIONS.format(chosen=chosen)
        return f"{upstream_text.rstrip()}\n\n{proxy_text}" if upstream_text else proxy_text

    def build_server(self) -> Server[Any]:
        return Server(
            "ipymcp",
            version=__version__,
            title="ipymcp (connect)",
            instructions=self.instructions(),
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_completion=self._complete,
            on_subscriptions_listen=ListenHandler(self.bus),
        )

    async def _list_tools(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None):
        cursor = params.cursor if params else None
        try:
            result = await self.forward(ctx, lambda c: c.list_tools(cursor=cursor), is_call=False)
        except ConnectError:
            result = types.ListToolsResult(tools=[])
        tools = [t for t in result.tools if t.name not in PROXY_TOOL_NAMES]
        if cursor is None:
            tools += PROXY_TOOLS
        return types.ListToolsResult(tools=tools, next_cursor=result.next_cursor)

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams):
        arguments = params.arguments or {}
        try:
            if params.name == "list_notebooks":
                self._session = ctx.session
                return _structured(await self.list_notebooks())
            if params.name == "select_notebook":
                self._session = ctx.session
                return _structured(await self.select_notebook(arguments.get("notebook"), arguments.get("kernel_id")))

            async def progress(value: float, total: float | None, message: str | None) -> None:
                await ctx.session.report_progress(value, total, message)

            downstream_request.set(ctx)
            result = await self.forward(
                ctx, lambda c: c.call_tool(params.name, arguments, progress_callback=progress)
            )
            if params.name == "restart_kernel" and not result.is_error and _restart_started(result) is not None:
                return await self._wait_for_restart(result, progress)
            return result
        except ConnectError as exc:
            return types.CallToolResult(content=[types.TextContent(type="text", text=str(exc))], is_error=True)
        except MCPError as exc:
            # e.g. the kernel asked a question (approval) this client cannot answer
            return types.CallToolResult(content=[types.TextContent(type="text", text=exc.error.message)], is_error=True)

    async def _wait_for_restart(
        self, result: types.CallToolResult, progress: Callable[[float, float | None, str | None], Awaitable[None]]
    ) -> types.CallToolResult:
        """restart_kernel answers as the restart starts: answer the agent once ipymcp is back in the
        new kernel (same kernel id, new pid), so the restart costs it no error at all."""
        meta = _restart_started(result) or {}
        old = self.upstream
        if old is not None:
            old.loss_reported = True  # the agent asked for it: not a loss to report
        self._lost_notice = None
        started = anyio.current_time()
        with anyio.move_on_after(RESTART_TIMEOUT):
            while True:
                await anyio.sleep(0.25)
                elapsed = anyio.current_time() - started
                current = self.upstream
                if current is not None and not current.dead.is_set() and current.info.get("pid") != meta.get("pid"):
                    return self._restarted(current, elapsed)
                fresh = [
                    k
                    for k in self.kernels()
                    if k.get("kernel_id") == meta.get("kernel_id") and k.get("pid") != meta.get("pid")
                ]
                if fresh:
                    async with self._switch_lock:
                        try:
                            upstream = await self.connect(fresh[0], "the same kernel after restart_kernel")
                        except (ConnectError, TimeoutError):
                            continue
                    self._lost_notice = None
                    await self._announce(ToolsListChanged(), PromptsListChanged(), ResourcesListChanged())
                    return self._restarted(upstream, elapsed)
                await report_progress(progress, elapsed, "waiting for the kernel to restart and ipymcp to load")
        return types.CallToolResult(
            content=[
                types.TextContent(
                    type="text",
                    text=f"The kernel restart started, but ipymcp did not come back within {RESTART_TIMEOUT:g} s "
                    "(the kernel may have failed to start, or ipymcp is not loaded again automatically in this "
                    "frontend). Ask the user to run `%load_ext ipymcp` in the notebook; list_notebooks shows "
                    "when it is back.",
                )
            ],
            is_error=True,
        )

    def _restarted(self, upstream: Upstream, elapsed: float) -> types.CallToolResult:
        info = upstream.info
        text = (
            f"The kernel of {describe_kernel(info)} restarted and ipymcp is back (after {elapsed:.1f} s, at "
            f"{info.get('url')}). Every variable and import of the old kernel is gone: load what you need again."
        )
        facts = {"kernel_id": info.get("kernel_id"), "pid": info.get("pid"), "url": info.get("url")}
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            # restart_kernel's output schema (ipymcp/tools/results.py Restart), in its "back" state.
            structured_content={"state": "back", **facts},
            meta={"restarted": True, **facts},
        )

    async def _list_resources(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None):
        cursor = params.cursor if params else None
        try:
            return await self.forward(ctx, lambda c: c.list_resources(cursor=cursor), is_call=False)
        except ConnectError:
            return types.ListResourcesResult(resources=[])

    async def _list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ):
        cursor = params.cursor if params else None
        try:
            return await self.forward(ctx, lambda c: c.list_resource_templates(cursor=cursor), is_call=False)
        except ConnectError:
            return types.ListResourceTemplatesResult(resource_templates=[])

    async def _read_resource(self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams):
        try:
            return await self.forward(ctx, lambda c: c.read_resource(str(params.uri)))
        except ConnectError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from exc

    async def _list_prompts(self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None):
        cursor = params.cursor if params else None
        try:
            return await self.forward(ctx, lambda c: c.list_prompts(cursor=cursor), is_call=False)
        except ConnectError:
            return types.ListPromptsResult(prompts=[])

    async def _get_prompt(self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams):
        try:
            return await self.forward(ctx, lambda c: c.get_prompt(params.name, params.arguments))
        except ConnectError as exc:
            raise MCPError(types.INTERNAL_ERROR, str(exc)) from exc

    async def _complete(self, ctx: ServerRequestContext[Any], params: types.CompleteRequestParams):
        argument = {"name": params.argument.name, "value": params.argument.value}
        context = params.context.arguments if params.context is not None else None
        try:
            return await self.forward(ctx, lambda c: c.complete(params.ref, argument, context), is_call=False)
        except ConnectError:
            return types.CompleteResult(completion=types.Completion(values=[]))

    # -- running ----------------------------------------------------------------------------------
    async def serve(self, read_stream: Any, write_stream: Any) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            info, because = choose_kernel(self.kernels(), self.selection)
            if info is None:
                self._last_problem = because
                log.warning("%s; waiting for one (run `%%load_ext ipymcp` in a notebook)", because)
            else:
                try:
                    await self.connect(info, because)
                except (ConnectError, TimeoutError) as exc:
                    self._last_problem = str(exc) or "timed out"
                    log.warning("%s", self._last_problem)
            if self.upstream is not None:
                log.warning("using %s (chosen: %s)", describe_kernel(self.upstream.info), self.chosen_because)
            tg.start_soon(self._poll)
            server = self.build_server()
            options = server.create_initialization_options(
                NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
            )
            await server.run(read_stream, write_stream, options)
            tg.cancel_scope.cancel()


def _restart_started(result: types.CallToolResult) -> dict[str, Any] | None:
    """restart_kernel's facts (kernel id, old pid) if its answer says the restart started: its
    structured result, or the ``_meta`` of kernels from before structured results."""
    facts = result.structured_content or {}
    if facts.get("state") == "restarting":
        return facts
    meta = result.meta or {}
    return meta if meta.get("restarting") else None


def _structured(data: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(data, indent=1))], structured_content=data
    )


async def run_stdio(selection: Selection) -> None:
    from mcp.server.stdio import stdio_server

    proxy = Proxy(selection)
    async with stdio_server() as (read_stream, write_stream):
        await proxy.serve(read_stream, write_stream)
