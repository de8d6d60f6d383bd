"""One tool call: check the arguments, ask the skill — over NATS, or its MCP server — traced and
bounded, shape the result.

Whatever goes wrong — a tool that is not offered, arguments that break its schema, no instance
left, no answer in time, a skill error, a reply that is not JSON — becomes a `ToolResult` that
says so plainly (the model reads it and answers the user anyway); nothing raises to the caller.
A result longer than the budget is cut, with a note saying how much was left out.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import nats.errors
from jsonschema.exceptions import best_match
from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wxbot_common.nats.propagation import inject_headers
from wxbot_common.skill_contract import ERROR_CODE_HEADER, ERROR_HEADER, CallContext, tool_span_name
from wxbot_nlp.skills.registry import SkillRegistry, Tool
from wxbot_nlp.skills.results import Outcome, ToolResult, cut, failed

UNKNOWN = "unknown"  # the metrics label of a tool name that is not offered (bounded cardinality)


if TYPE_CHECKING:  # the bridge loads the mcp SDK: only when a server is configured
    from wxbot_nlp.skills.mcp import McpBridge


class SkillMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter("wxbot_nlp_skill_calls", "Tool calls by skill (tool name)", ["skill"], registry=registry)
        self.errors = Counter(
            "wxbot_nlp_skill_errors",
            "Failed tool calls by skill and kind: unknown_tool, invalid_arguments, unavailable, timeout, "
            "skill_error, bad_reply",
            ["skill", "kind"],
            registry=registry,
        )
        self.latency = Histogram(
            "wxbot_nlp_skill_seconds",
            "Latency of tool calls that reached a skill, by skill and outcome",
            ["skill", "outcome"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.offered = Gauge("wxbot_nlp_skills_offered", "Tools offered to the model right now", registry=registry)
        self.mcp_up = Gauge(
            "wxbot_nlp_mcp_server_up",
            "1 while this replica has a session with the MCP server and its last tools/list succeeded",
            ["server"],
            registry=registry,
        )


class SkillCaller:
    def __init__(
        self,
        nc: Client,
        registry: SkillRegistry,
        metrics: SkillMetrics,
        result_max_chars: int,
        mcp: Mapping[str, McpBridge] | None = None,
    ) -> None:
        self._nc = nc
        self._registry = registry
        self._metrics = metrics
        self._budget = result_max_chars
        self._mcp = dict(mcp or {})  # by server name (a tool's `service`)
        self._tracer = trace.get_tracer("wxbot.nlp.skills")

    def arguments_for_command(self, tool: Tool, rest: str) -> str:
        """`/weather 北京`: the text after the command is the value of the schema's first required
        property (else its first property), as a number when that property is one; a tool without
        properties, or a command without text, gets no arguments."""
        props = tool.parameters.get("properties") or {}
        names = [p for p in tool.parameters.get("required") or [] if p in props] or list(props)
        if not names or not rest:
            return "{}"
        kind = props[names[0]].get("type") if isinstance(props[names[0]], dict) else None
        value: object = rest
        with contextlib.suppress(ValueError):
            value = int(rest) if kind == "integer" else float(rest) if kind == "number" else rest
        return json.dumps({names[0]: value}, ensure_ascii=False)

    async def call(
        self, name: str, arguments: str, timeout_s: float, call_id: str = "", caller: CallContext | None = None
    ) -> ToolResult:
        """`caller`: whose message is being answered; it travels as the `Wxbot-*` headers."""
        tool = self._registry.tools().get(name)
        label = name if tool is not None else UNKNOWN
        self._metrics.calls.labels(label).inc()
        result = await self._call(tool, name, arguments, timeout_s, call_id, caller)
        if result.error is not None:
            self._metrics.errors.labels(label, result.error).inc()
        return result

    async def _call(
        self, tool: Tool | None, name: str, arguments: str, timeout_s: float, call_id: str, caller: CallContext | None
    ) -> ToolResult:
        if tool is None:
            offered = ", ".join(sorted(self._registry.tools())) or "none"
            return failed("unknown_tool", f"no tool named {name!r} is available (available: {offered})", name)
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            return failed("invalid_arguments", "the arguments are not valid JSON", name)
        error = best_match(tool.validator.iter_errors(args)) if tool.validator is not None else None
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            return failed("invalid_arguments", f"arguments do not match the schema at {where}: {error.message}", name)
        with self._tracer.start_as_current_span(
            tool_span_name(name), kind=SpanKind.CLIENT, attributes=self._span_attributes(tool, call_id)
        ) as span:
            started = time.perf_counter()
            if tool.source == "mcp":
                result, outcome = await self._mcp[tool.service].call(tool, args, timeout_s)
            else:
                payload = json.dumps(args, ensure_ascii=False).encode()
                result, outcome = await self._request(tool, payload, timeout_s, caller)
            if outcome is not None:
                self._metrics.latency.labels(tool.name, outcome).observe(time.perf_counter() - started)
            if result.error is not None:
                span.set_status(StatusCode.ERROR, result.error)
                span.set_attribute("error.type", result.error)
                return result
            return ToolResult(cut(result.content, self._budget), value=result.value)

    def _span_attributes(self, tool: Tool, call_id: str) -> dict[str, str | int]:
        """GenAI's execute_tool attributes, and the transport's: NATS messaging, or MCP over HTTP."""
        common: dict[str, str | int] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool.name,
            "gen_ai.tool.call.id": call_id,
            "wxbot.skill.service": tool.service,
            "wxbot.skill.version": tool.version,
            "wxbot.skill.source": tool.source,
        }
        if tool.source == "mcp":
            server = self._mcp[tool.service].server
            return {
                **common,
                "mcp.method.name": "tools/call",
                "network.protocol.name": "http",
                "server.address": server.host,
                "server.port": server.port,
            }
        return {**common, "messaging.system": "nats", "messaging.destination.name": tool.subject}

    async def _request(
        self, tool: Tool, payload: bytes, timeout_s: float, caller: CallContext | None
    ) -> tuple[ToolResult, Outcome | None]:
        """One NATS request; `caller` travels as the `Wxbot-*` headers."""
        headers = caller.to_headers() if caller is not None else {}
        inject_headers(headers)
        try:
            msg = await self._nc.request(tool.subject, payload, timeout=timeout_s, headers=headers)
        except nats.errors.NoRespondersError:
            return failed("unavailable", "the skill is not running right now", tool.name), None
        except TimeoutError:
            return failed("timeout", f"the skill did not answer within {timeout_s:.3g} s", tool.name), "timeout"
        except nats.errors.Error as exc:
            return failed("unavailable", f"the call could not be made ({type(exc).__name__})", tool.name), None
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            description = msg.headers.get(ERROR_HEADER, "")[:500]
            code = msg.headers[ERROR_CODE_HEADER]
            return failed("skill_error", description or "the skill failed", tool.name, code=code), "error"
        try:
            value = json.loads(msg.data)
        except ValueError:
            return failed("bad_reply", "the skill replied with something that is not JSON", tool.name), "error"
        return ToolResult(value if isinstance(value, str) else msg.data.decode(), value=value), "ok"
