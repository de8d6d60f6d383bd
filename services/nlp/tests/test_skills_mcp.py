"""MCP servers as skills, against a real MCP server (the SDK's own, streamable HTTP on loopback) in
both protocol eras and a real nats-server: listing, calls and their failures, a server that goes
away and comes back, change notifications, and names shared with NATS skills or other servers."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp_types as types
import nats
import pytest
from mcp.server.mcpserver import Context
from nats.aio.client import Client
from nats.micro import add_service
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from structlog.testing import capture_logs

from wxbot_common.skill_contract import tool_metadata
from wxbot_devkit.fakes.mcp import HUGE_CHARS, FakeMcpServer
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.launch import NatsServer
from wxbot_nlp.settings import NlpSettings
from wxbot_nlp.skills.calls import SkillCaller, SkillMetrics
from wxbot_nlp.skills.mcp import McpBridge, McpServer, parse_servers, tools_of_listing
from wxbot_nlp.skills.registry import SkillFilter, SkillRegistry

pytestmark = pytest.mark.timeout(60)

FAKE_TOOLS = ["broken", "forecast", "huge", "lookup_order", "picture", "slow"]


def test_servers_are_name_url_pairs_in_order() -> None:
    servers = parse_servers(" maps=http://127.0.0.1:8931/mcp , files=https://user:pw@mcp.example.com/mcp,")
    assert servers == [
        McpServer("maps", "http://127.0.0.1:8931/mcp"),
        McpServer("files", "https://user:pw@mcp.example.com/mcp"),
    ]
    assert servers[1].address == "mcp.example.com:443"  # what logs show: never the credentials
    assert parse_servers("") == []


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("http://127.0.0.1:8931/mcp", "is not name=url"),
        ("my maps=http://x/mcp", "is not name=url"),
        ("maps=ftp://x/mcp", "is not an http(s) URL"),
        ("maps=", "is not an http(s) URL"),
        ("maps=http://a/mcp,maps=http://b/mcp", "used twice"),
    ],
)
def test_a_bad_server_list_stops_nlp_at_start_naming_the_variable(raw: str, says: str) -> None:
    with pytest.raises(ValidationError, match=f"SKILLS_MCP_SERVERS: .*{re.escape(says)}"):
        NlpSettings(_env_file=None, skills_mcp_servers=raw)


def test_a_listing_keeps_the_tools_that_follow_the_name_rules() -> None:
    obj = {"type": "object", "properties": {"q": {"type": "string"}}}
    listed = [
        types.Tool(name="search", description="Search it", input_schema=obj),
        types.Tool(name="files.read", input_schema=obj),  # MCP allows dots; OpenAI does not
        types.Tool(name="weird", input_schema={"type": "object", "properties": {"q": {"type": 7}}}),
        types.Tool(name="search", description="again", input_schema=obj),
        types.Tool(name="titled", title="Has a title only", input_schema=obj),
    ]
    tools, problems = tools_of_listing("docs", "2.0", listed)
    assert [(t.name, t.description, t.source, t.service, t.version) for t in tools] == [
        ("search", "Search it", "mcp", "docs", "2.0"),
        ("titled", "Has a title only", "mcp", "docs", "2.0"),
    ]
    assert [p.split(": ")[0] for p in problems] == [
        "MCP server docs/files.read",
        "MCP server docs/weird",
        "MCP server docs/search",
    ]


@pytest.fixture(params=["2026-era", "2025-era"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeMcpServer]:
    server = FakeMcpServer(legacy=request.param == "2025-era")

    @server.mcp.tool(structured_output=False)
    async def grow(name: str, ctx: Context) -> str:
        """Adds a tool and says so, as a server whose tools change does."""
        server.add_tool(name)
        await ctx.notify_tools_changed()  # 2026-era: on the client's subscriptions/listen stream
        await ctx.session.send_tool_list_changed()  # 2025-era: a notification on the session
        return "grown"

    await server.start()
    yield server
    await server.stop()


async def running(bridge: McpBridge) -> asyncio.Task[None]:
    task = asyncio.create_task(bridge.run())
    await wait_until(lambda: bridge.up, 10, "the bridge to connect")
    return task


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_server_s_tools_are_listed_and_called_in_either_protocol_era(fake: FakeMcpServer) -> None:
    bridge = McpBridge(McpServer("fake", fake.url), interval_s=30)
    task = await running(bridge)
    try:
        tools = {t.name: t for t in bridge.tools()}
        assert sorted(tools) == sorted([*FAKE_TOOLS, "grow"])
        assert tools["forecast"].description == "The weather in a city today."
        assert tools["forecast"].parameters["required"] == ["city"]
        assert tools["forecast"].version == "1.0.0" and tools["forecast"].subject == "forecast"

        result, outcome = await bridge.call(tools["forecast"], {"city": "北京"}, 2)
        assert (result.content, result.error, outcome) == ("Sunny in 北京, 25°C", None, "ok")
        result, outcome = await bridge.call(tools["broken"], {}, 2)
        assert result.error == "skill_error" and outcome == "error"
        assert json.loads(result.content) == {
            "error": "Error executing tool broken: the upstream weather service is down",
            "tool": "broken",
        }
        result, _ = await bridge.call(tools["picture"], {}, 2)
        assert result.content == "[image: image/png, 66 bytes, not shown]\na clear blue sky"
        result, outcome = await bridge.call(tools["slow"], {"seconds": 5}, 0.3)
        assert (result.error, outcome) == ("timeout", "timeout")
        assert "did not answer within 0.3 s" in result.content
        result, _ = await bridge.call(tools["huge"], {}, 5)
        assert len(result.content) == HUGE_CHARS  # the caller cuts it to its budget
        assert [c.name for c in fake.calls] == ["forecast", "broken", "picture", "slow", "huge"]
    finally:
        await stopped(task)


async def test_a_change_notification_lists_again_at_once(fake: FakeMcpServer) -> None:
    # A server slow to take up the subscription: a bridge that offered the tools before the
    # server acknowledged it would miss a change made at once (seen on a slow CI run).
    fake.listen_delay_s = 0.5
    bridge = McpBridge(McpServer("fake", fake.url), interval_s=60)  # no periodic listing in this test
    task = await running(bridge)
    try:
        grow = next(t for t in bridge.tools() if t.name == "grow")
        assert (await bridge.call(grow, {"name": "sprout"}, 2))[0].content == "grown"
        await wait_until(lambda: "sprout" in [t.name for t in bridge.tools()], 5, "the new tool")
    finally:
        await stopped(task)


async def test_a_server_that_goes_away_is_dropped_and_comes_back(fake: FakeMcpServer) -> None:
    changes: list[list[str]] = []
    bridge = McpBridge(McpServer("fake", fake.url), interval_s=1)
    bridge.watch(lambda: changes.append(sorted(t.name for t in bridge.tools())))
    task = await running(bridge)
    try:
        forecast = next(t for t in bridge.tools() if t.name == "forecast")
        await fake.refuse_connections()
        await wait_until(lambda: not bridge.tools(), 5, "the tools to be dropped")
        assert not bridge.up
        result, outcome = await bridge.call(forecast, {"city": "x"}, 2)
        assert (result.error, outcome) == ("unavailable", None)
        assert "not reachable right now" in result.content
        await fake.accept_connections()  # a new session manager: a 2025-era session id is unknown now
        await wait_until(bridge.tools, 5, "the tools to come back")
        assert (await bridge.call(forecast, {"city": "y"}, 2))[0].content == "Sunny in y, 25°C"
        assert changes[-2:] == [[], sorted([*FAKE_TOOLS, "grow"])]
    finally:
        await stopped(task)


async def test_a_server_that_is_not_there_at_start_is_offered_once_it_is() -> None:
    fake = FakeMcpServer()
    await fake.start()
    url, fake_port = fake.url, fake.base_url.rsplit(":", 1)[1]
    await fake.refuse_connections()
    bridge = McpBridge(McpServer("late", url), interval_s=1)
    with capture_logs() as logs:
        task = asyncio.create_task(bridge.run())
        try:
            await wait_until(lambda: [e for e in logs if e["event"] == "mcp_server_unreachable"], 5, "a failed try")
            assert not bridge.up and bridge.tools() == [] and not task.done()  # nothing offered, nothing raised
            await fake.accept_connections()
            await wait_until(bridge.tools, 5, "the tools")
        finally:
            await stopped(task)
            await fake.stop()
    assert [e["address"] for e in logs if e["event"] == "mcp_server_unreachable"] == [f"127.0.0.1:{fake_port}"]


@pytest.fixture(scope="module")
async def nc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    server = NatsServer(Path(tmp_path_factory.mktemp("nats")))
    await server.start()
    client = await nats.connect(server.url)
    yield client
    await client.drain()
    await server.stop()


async def test_names_shared_with_a_nats_skill_or_an_earlier_server_are_theirs(nc: Client) -> None:
    orders = await add_service(nc, name="orders", version="1.0.0")
    await orders.add_endpoint(
        name="lookup_order",
        handler=lambda r: r.respond(b'"shipped"'),
        metadata=tool_metadata("Order status", {"type": "object", "properties": {"order_id": {"type": "string"}}}),
    )
    first, second = FakeMcpServer("first"), FakeMcpServer("second")
    await first.start()
    await second.start()
    bridges = [McpBridge(McpServer("first", first.url), 30), McpBridge(McpServer("second", second.url), 30)]
    tasks = [await running(b) for b in bridges]
    try:

        async def offered(allow: str = "", deny: str = "") -> dict[str, tuple[str, str]]:
            registry = SkillRegistry(nc, SkillFilter.parse(allow, deny), collect_s=1.0, sources=bridges)
            await registry.discover_once()
            return {n: (t.source, t.service) for n, t in registry.tools().items()}

        with capture_logs() as logs:
            tools = await offered()
        assert tools["lookup_order"] == ("nats", "orders")  # a NATS skill keeps its name
        assert tools["forecast"] == ("mcp", "first")  # the server listed first keeps its names
        assert sorted(tools) == FAKE_TOOLS
        problems = [e["problem"] for e in logs if e["event"] == "skill_not_offered"]
        assert (
            "lookup_order: MCP server first's tool is not offered: the NATS skill orders has that name "
            "(SKILLS_DENY=orders would offer it)"
        ) in problems
        assert (
            "forecast: MCP server second's tool is not offered: MCP server first, listed before it in "
            "SKILLS_MCP_SERVERS, has that name"
        ) in problems
        # The operator chooses: deny the NATS skill and the MCP tool takes the name; deny a server,
        # or one of its tools, and the next one's are offered.
        assert (await offered(deny="orders"))["lookup_order"] == ("mcp", "first")
        assert (await offered(deny="first"))["forecast"] == ("mcp", "second")
        assert sorted(await offered(allow="second,orders", deny="huge")) == sorted(set(FAKE_TOOLS) - {"huge"})
    finally:
        for task in tasks:
            await stopped(task)
        await first.stop()
        await second.stop()
        await orders.stop()


async def test_a_call_through_the_caller_is_checked_cut_and_counted(nc: Client) -> None:
    fake = FakeMcpServer()
    await fake.start()
    bridge = McpBridge(McpServer("fake", fake.url), 30)
    task = await running(bridge)
    registry = SkillRegistry(nc, SkillFilter(), collect_s=0.3, sources=[bridge])
    await registry.discover_once()
    metrics = CollectorRegistry()
    caller = SkillCaller(nc, registry, SkillMetrics(metrics), result_max_chars=1000, mcp={"fake": bridge})
    try:

        def sample(name: str, **labels: Any) -> float | None:
            return metrics.get_sample_value(name, labels)

        result = await caller.call("huge", "{}", timeout_s=5)
        assert result.ok and result.content.endswith(
            f"[truncated: the result had {HUGE_CHARS} characters; only the first 1000 are shown]"
        )
        result = await caller.call("forecast", '{"city": 7}', timeout_s=5)
        assert result.error == "invalid_arguments" and "7 is not of type 'string'" in result.content
        assert [c.name for c in fake.calls] == ["huge"]  # bad arguments never reach the server
        await caller.call("broken", "{}", timeout_s=5)
        assert sample("wxbot_nlp_skill_calls_total", skill="forecast") == 1
        assert sample("wxbot_nlp_skill_errors_total", skill="forecast", kind="invalid_arguments") == 1
        assert sample("wxbot_nlp_skill_errors_total", skill="broken", kind="skill_error") == 1
        assert sample("wxbot_nlp_skill_seconds_count", skill="huge", outcome="ok") == 1
        assert sample("wxbot_nlp_skill_seconds_count", skill="broken", outcome="error") == 1
    finally:
        await stopped(task)
        await fake.stop()
