"""A real MCP server over streamable HTTP, for tests and the demo: the `mcp` SDK's own `MCPServer`
(called `FastMCP` before SDK 2.0) with a few tools and fault knobs — a third party's MCP skill as
nlp meets it.

Tools: `forecast(city)` answers in text; `slow(seconds)` sleeps first; `broken()` fails (`isError`);
`huge()` returns 1,000,000 characters; `picture()` an image and a caption; `lookup_order(order_id)`
shares its name with the NATS skill of the e2e tests. Knobs: `legacy=True` answers like a 2025-era
server (it does not know `server/discover`, so clients fall back to the `initialize` handshake and a
session id); `listen_delay_s` holds a `subscriptions/listen` request back before the SDK takes it
up; `refuse_connections()` / `accept_connections()` take it away and bring it back on the
same port (a new SDK session manager, as a restarted server: old session ids are unknown);
`add_tool(name)` grows the list at run time. `calls` records each call with its `_meta.traceparent`.

`python -m wxbot_devkit.fakes.mcp --port 8931` serves it at `http://127.0.0.1:8931/mcp`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wxbot_devkit.fakes.server import FakeService, base_arg_parser, serve_forever

PATH = "/mcp"
HUGE_CHARS = 1_000_000
PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@dataclass(frozen=True)
class McpCall:
    """One `tools/call` the server ran."""

    name: str
    arguments: dict[str, Any]
    traceparent: str | None


class _Gate:
    """ASGI wrapper for the knobs that act on a request before the SDK sees it: `server/discover`
    answered as a 2025-era server answers a method it does not know outside a session (HTTP 400), so
    a client falls back to the initialize handshake; `subscriptions/listen` held back a while, as a
    slow server acknowledges a subscription late."""

    def __init__(self, app: ASGIApp, server: FakeMcpServer) -> None:
        self._app = app
        self._server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while not messages or messages[-1].get("more_body", False):
            messages.append(await receive())
            body += messages[-1].get("body", b"")
        try:
            method = json.loads(body).get("method")
        except (ValueError, AttributeError):
            method = None
        if method == "server/discover" and self._server.legacy:
            error = {"code": -32600, "message": "Bad Request: Missing session ID"}
            await JSONResponse({"jsonrpc": "2.0", "id": None, "error": error}, status_code=400)(scope, receive, send)
            return
        if method == "subscriptions/listen" and self._server.listen_delay_s:
            await asyncio.sleep(self._server.listen_delay_s)  # the knob itself: a late acknowledgment
        pending = list(messages)

        async def replay() -> Message:
            return pending.pop(0) if pending else await receive()

        await self._app(scope, replay, send)


class FakeMcpServer(FakeService):
    lifespan = True  # the SDK's session manager runs in the app's lifespan

    def __init__(self, name: str = "fake-mcp", version: str = "1.0.0", legacy: bool = False) -> None:
        super().__init__()
        self.legacy = legacy
        self.listen_delay_s = 0.0  # before a `subscriptions/listen` stream is taken up
        self.calls: list[McpCall] = []
        self.mcp = MCPServer(name, version=version, log_level="WARNING")
        self._add_tools()

    @property
    def url(self) -> str:
        return f"{self.base_url}{PATH}"

    @property
    def app(self) -> ASGIApp:
        """A new app each time it listens: the SDK's session manager runs once, as a server process would."""
        return _Gate(self.mcp.streamable_http_app(streamable_http_path=PATH), self)

    def _record(self, name: str, arguments: dict[str, Any], ctx: Context) -> None:
        meta = ctx.request_context.meta or {}
        traceparent = meta.get("traceparent")
        self.calls.append(McpCall(name, arguments, traceparent if isinstance(traceparent, str) else None))

    def add_tool(self, name: str, description: str = "A tool added at run time.") -> None:
        async def added(ctx: Context) -> str:
            self._record(name, {}, ctx)
            return f"{name} ran"

        self.mcp.add_tool(added, name=name, description=description, structured_output=False)

    def _add_tools(self) -> None:
        mcp = self.mcp

        @mcp.tool(structured_output=False)
        async def forecast(city: str, ctx: Context) -> str:
            """The weather in a city today."""
            self._record("forecast", {"city": city}, ctx)
            return f"Sunny in {city}, 25°C"

        @mcp.tool(structured_output=False)
        async def slow(seconds: float, ctx: Context) -> str:
            """Answers after `seconds`."""
            self._record("slow", {"seconds": seconds}, ctx)
            await asyncio.sleep(seconds)  # the knob itself: a tool that takes this long
            return f"slept {seconds} s"

        @mcp.tool(structured_output=False)
        async def broken(ctx: Context) -> str:
            """Always fails."""
            self._record("broken", {}, ctx)
            raise ToolError("the upstream weather service is down")

        @mcp.tool(structured_output=False)
        async def huge(ctx: Context) -> str:
            """A very long answer."""
            self._record("huge", {}, ctx)
            return "y" * HUGE_CHARS

        @mcp.tool(structured_output=False)
        async def picture(ctx: Context) -> list[Any]:
            """A picture of the sky, with a caption."""
            self._record("picture", {}, ctx)
            return [Image(data=PNG_1PX, format="png"), "a clear blue sky"]

        @mcp.tool(structured_output=False)
        async def lookup_order(order_id: str, ctx: Context) -> str:
            """Look up an order (the MCP server's own idea of it)."""
            self._record("lookup_order", {"order_id": order_id}, ctx)
            return f"order {order_id}: unknown to the MCP server"


def main(argv: list[str] | None = None) -> None:
    parser = base_arg_parser("Fake MCP server (streamable HTTP) with fault knobs")
    parser.add_argument("--legacy", action="store_true", help="answer like a 2025-era server (no server/discover)")
    args = parser.parse_args(argv)
    fake = FakeMcpServer(legacy=args.legacy)
    serve_forever(fake.app, args.host, args.port, banner=[f"MCP endpoint: {PATH}"], lifespan=True)


if __name__ == "__main__":
    main()
