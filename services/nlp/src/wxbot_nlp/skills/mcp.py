"""MCP servers as skills: the tools of each server in SKILLS_MCP_SERVERS join the registry.

Each nlp replica keeps its own session with each server (the official `mcp` SDK, streamable
HTTP) in a background task, so there is no bridge process to run, scale or lose. The task lists
the server's tools (every page) when it connects, again every interval, and at once when the
server says they changed (`notifications/tools/list_changed` on a 2025-era session, a
`subscriptions/listen` stream on a 2026-era one). When a listing fails — the server is down, went
away, or answers nonsense — its tools are dropped at once and the task reconnects, soon at first
and then every interval. So a server that stops is no longer offered within interval + request
timeout (8 s by default) and is offered again within interval + one connect once it is back.

Calls never wait for any of that: without a session a call is "not reachable right now"; with
one, `tools/call` is bounded by the call's timeout. A result's text blocks reach the model as its
text, other content is summarised in a line; `isError` is an error result. Listing is not traced
(as NATS discovery is not); each call is, and the SDK carries the trace to the server in `_meta`.

Importing this module loads the `mcp` SDK (~0.7 s and ~25 MB): nlp imports it only when
SKILLS_MCP_SERVERS names a server; the setting itself is parsed by `mcp_servers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import TaskStatus
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared.exceptions import MCPError
from opentelemetry import trace
from pydantic import ValidationError

from wxbot_common.logs import get_logger
from wxbot_nlp.skills.mcp_servers import McpServer, parse_servers
from wxbot_nlp.skills.registry import Tool, checked_parameters, name_problem
from wxbot_nlp.skills.results import Outcome, ToolResult, failed

__all__ = ["McpBridge", "McpServer", "parse_servers"]

MAX_PAGES = 20  # of one tools/list: a paginator that never ends cannot hold the listing forever
FIRST_RETRY_S = 0.5  # after a session ends; doubles up to the interval
BACKSTOP_S = 0.5  # past the call's timeout, in case the SDK's own clock never started
ERROR_CHARS = 500  # of an error message the model is given


def tools_of_listing(server: str, server_version: str, listed: list[types.Tool]) -> tuple[list[Tool], list[str]]:
    """The offerable tools of one server's listing, and why each other one is not."""
    tools: dict[str, Tool] = {}
    problems: list[str] = []
    for listing in listed:
        where = f"MCP server {server}/{listing.name}"
        if (bad_name := name_problem(listing.name, where)) is not None:
            problems.append(bad_name)
            continue
        if listing.name in tools:
            problems.append(f"{where}: listed twice; the first is offered")
            continue
        try:
            parameters, validator = checked_parameters(listing.input_schema)
        except ValueError as exc:
            problems.append(f"{where}: inputSchema is not a JSON Schema object: {exc}")
            continue
        tools[listing.name] = Tool(
            name=listing.name,
            description=listing.description or listing.title or "",
            parameters=parameters,
            subject=listing.name,
            service=server,
            version=server_version,
            validator=validator,
            source="mcp",
        )
    return list(tools.values()), problems


def _size(data: str) -> int:
    """The bytes a base64 text holds."""
    return len(data) * 3 // 4 - data[-2:].count("=")


def describe(block: types.ContentBlock) -> str:
    """One content block as the model reads it: text as it is, anything else in one line."""
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        return f"[{block.type}: {block.mime_type}, {_size(block.data)} bytes, not shown]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.uri}{f' ({block.name})' if block.name else ''}]"
    resource = block.resource
    if isinstance(resource, types.TextResourceContents):
        return resource.text
    return f"[resource {resource.uri}: {resource.mime_type or 'binary'}, {_size(resource.blob)} bytes, not shown]"


def text_of(result: types.CallToolResult) -> str:
    """The result's content blocks, one after another; its structured content when it has no blocks."""
    if not result.content and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(describe(block) for block in result.content)


def _reason(exc: BaseException) -> str:
    """The first real error inside the SDK's exception groups, in one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:300]


@contextlib.contextmanager
def _untraced() -> Iterator[None]:
    """Below an unsampled parent the SDK's spans are not recorded: listing every few seconds is
    not a trace anyone wants (NATS discovery records none either)."""
    context = trace.SpanContext(
        trace_id=random.getrandbits(128) or 1,
        span_id=random.getrandbits(64) or 1,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
    )
    with trace.use_span(trace.NonRecordingSpan(context), end_on_exit=False):
        yield


class McpBridge:
    """One MCP server's tools, kept current by `run()` (a background task for the life of nlp)."""

    def __init__(self, server: McpServer, interval_s: float = 5.0, request_timeout_s: float = 3.0) -> None:
        self.server = server
        self._on_change: Callable[[], None] = lambda: None
        self._interval_s = interval_s
        self._timeout_s = request_timeout_s
        self._client: Client | None = None
        self._tools: list[Tool] = []
        self._wake = asyncio.Event()
        self._reported: set[str] = set()
        self._log = get_logger("wxbot.nlp.skills").bind(mcp_server=server.name)

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def up(self) -> bool:
        """A session is open and its last listing succeeded."""
        return self._client is not None

    def tools(self) -> list[Tool]:
        return self._tools

    def watch(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change

    # -- the session ----------------------------------------------------------------------------

    async def run(self) -> None:
        delay, first = FIRST_RETRY_S, True
        with _untraced():
            while True:
                try:
                    await self._session()
                except Exception as exc:  # down, gone or misbehaving: its tools go at once
                    was_up = self.up
                    self._lost(exc, report=was_up or first)
                    delay = FIRST_RETRY_S if was_up else min(delay * 2, self._interval_s)
                first = False
                await self._nap(delay)

    async def _session(self) -> None:
        client = Client(
            self.server.url,
            cache=None,  # every listing asks the server: it is how we know it is there
            read_timeout_seconds=self._timeout_s,
            message_handler=self._on_message,
            client_info=types.Implementation(name="wxbot-nlp", version=version("wxbot-nlp")),
        )
        async with client, anyio.create_task_group() as group:
            # Subscribed before the first listing: a change made in between is not missed.
            await group.start(self._listen, client)
            await self._relist(client)
            self._client = client
            self._log.info("mcp_server_connected", protocol=client.protocol_version, tools=len(self._tools))
            while True:
                await self._nap(self._interval_s)
                await self._relist(client)

    async def _relist(self, client: Client) -> None:
        listed: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        info = client.server_info
        tools, problems = tools_of_listing(self.name, info.version if info else "", listed)
        for problem in problems:
            if problem not in self._reported:
                self._reported.add(problem)
                self._log.warning("skill_not_offered", problem=problem)
        if tools != self._tools:
            self._tools = tools
            self._on_change()

    async def _listen(self, client: Client, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """On a 2026-era session, wake the listing when the server says its tools changed.
        Started once the server has acknowledged the subscription (or there is none to have)."""
        started = False
        try:
            async with client.listen(tools_list_changed=True) as changes:
                task_status.started()
                started = True
                async for _ in changes:
                    self._wake.set()
        except ListenNotSupportedError:
            return  # a 2025-era session: the change arrives as a notification (`_on_message`)
        except (MCPError, SubscriptionLost, TimeoutError) as exc:
            self._log.debug("mcp_listen_ended", reason=_reason(exc))
        finally:
            if not started:
                task_status.started()
        self._wake.set()  # the stream ended: look at the server now

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification | Exception):
            self._wake.set()  # tools changed, or the transport faltered: list again now

    async def _nap(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _lost(self, exc: BaseException, report: bool) -> None:
        self._client = None
        if report:
            self._log.warning("mcp_server_unreachable", reason=_reason(exc), address=self.server.address)
        if self._tools:
            self._tools = []
            self._on_change()

    # -- calls ----------------------------------------------------------------------------------

    async def call(self, tool: Tool, arguments: dict[str, Any], timeout_s: float) -> tuple[ToolResult, Outcome | None]:
        """`tools/call` within `timeout_s`; the result and the outcome for the latency histogram
        (None when the call never reached the server)."""
        client = self._client
        if client is None:
            return failed("unavailable", "the MCP server is not reachable right now", tool.name), None
        try:
            async with asyncio.timeout(timeout_s + BACKSTOP_S):
                result = await client.call_tool(tool.subject, arguments, read_timeout_seconds=timeout_s)
        except TimeoutError:
            return failed("timeout", f"the skill did not answer within {timeout_s:.3g} s", tool.name), "timeout"
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                return failed("timeout", f"the skill did not answer within {timeout_s:.3g} s", tool.name), "timeout"
            self._wake.set()  # the server may be gone, or its tools changed: list again now
            if exc.code == types.CONNECTION_CLOSED:
                return failed("unavailable", "the MCP server is not reachable right now", tool.name), None
            return failed("skill_error", exc.message[:ERROR_CHARS], tool.name, code=str(exc.code)), "error"
        except (ValidationError, RuntimeError) as exc:  # a malformed result, or one breaking its outputSchema
            message = f"the MCP server's result is not valid: {str(exc)[:200]}"
            return failed("bad_reply", message, tool.name), "error"
        except Exception as exc:  # the SDK failed in a way it does not document: still one result
            self._log.exception("mcp_call_failed", tool=tool.name)
            self._wake.set()
            return failed("unavailable", f"the call could not be made ({type(exc).__name__})", tool.name), None
        if result.is_error:
            return failed("skill_error", text_of(result)[:ERROR_CHARS] or "the tool failed", tool.name), "error"
        return ToolResult(text_of(result), value=result.structured_content), "ok"
