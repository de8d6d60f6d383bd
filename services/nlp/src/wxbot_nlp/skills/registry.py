"""Which tools nlp offers the model right now: skills discovered over NATS (`$SRV.INFO`).

Every `interval_s` (a fixed cadence) one INFO request goes to all micro services; every instance
answers (control subjects have no queue group), and replies are collected until a short quiet
spell (at most `collect_s`). An instance is live while it answered one of the rounds started in
the last 1.5 intervals, so one lost reply does not make a tool flicker, and a tool is offered
while a live instance has it. With the defaults (5 s rounds, collection ≤ 2 s) a new skill is
offered ≤ 7 s after it registers and one whose last instance stopped is dropped ≤ 12 s after —
under the contract's 15 s both ways.

Endpoints that are not valid tools (no `parameters`, a schema that is not a JSON Schema object, a
name OpenAI would reject) are skipped and reported once. Two live definitions of one tool name
that differ (a rolling upgrade, or two skills choosing the same name): the highest service version
wins; equal versions that disagree are not offered at all, since a call could reach either.

Tools of MCP servers (`ToolSource`s, see `mcp.py`) join the same view under the same name rules
and filters. A name both a NATS skill and an MCP server offer goes to the NATS skill; one that two
MCP servers offer goes to the server listed first. Either way the other is reported once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import nats.errors
from jsonschema import exceptions as schema_errors
from jsonschema import validators
from nats.aio.client import Client

from wxbot_common.logs import get_logger
from wxbot_common.skill_contract import COMMAND, META_COMMAND, META_DESCRIPTION, META_PARAMETERS, TOOL_NAME

INFO_SUBJECT = "$SRV.INFO"
MAX_TOOLS = 128  # OpenAI's limit on functions per request
Source = Literal["nats", "mcp"]


@dataclass(frozen=True)
class Tool:
    """One offered tool: where to call it, and how to check its arguments first."""

    name: str
    description: str
    parameters: dict[str, Any]
    subject: str  # NATS: the endpoint's subject; MCP: the tool's name on its server
    service: str  # NATS: the micro service's name; MCP: the server's name in SKILLS_MCP_SERVERS
    version: str
    command: str | None = None
    validator: Any = field(default=None, compare=False, repr=False)  # a jsonschema Validator
    source: Source = "nats"
    _definition: dict[str, Any] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        definition = {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }
        object.__setattr__(self, "_definition", definition)

    def definition(self) -> dict[str, Any]:
        """The entry of the chat request's `tools`: one dict for the tool's life, which requests
        encode once (`openai_compatible.ToolsJson`); read it, never change it."""
        return self._definition

    def same_contract(self, other: Tool) -> bool:
        return (self.description, self.parameters, self.subject, self.command) == (
            other.description,
            other.parameters,
            other.subject,
            other.command,
        )


def _version_key(version: str) -> tuple[int, ...]:
    core = version.split("-", 1)[0].split("+", 1)[0]
    try:
        return tuple(int(p) for p in core.split("."))
    except ValueError:
        return ()


def checked_parameters(parameters: object) -> tuple[dict[str, Any], Any]:
    """The schema and a validator for it; ValueError when it is not a JSON Schema of an object."""
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise ValueError("the schema must describe an object")
    try:
        checker = validators.validator_for(parameters)
        checker.check_schema(parameters)
    except schema_errors.SchemaError as exc:
        raise ValueError(str(exc)[:200]) from exc
    return parameters, checker(parameters)


def name_problem(name: str, where: str) -> str | None:
    """Why `name` cannot be a tool name (OpenAI's rule), if it cannot."""
    return None if TOOL_NAME.match(name) else f"{where}: tool names are 1-64 of A-Z a-z 0-9 _ -"


def tools_of(info: dict[str, Any]) -> tuple[list[Tool], list[str]]:
    """The tools of one INFO reply, and why each other endpoint is not one."""
    tools: list[Tool] = []
    problems: list[str] = []
    service, version = str(info.get("name", "")), str(info.get("version", ""))
    for endpoint in info.get("endpoints") or []:
        if not isinstance(endpoint, dict):
            continue
        name, meta = str(endpoint.get("name", "")), endpoint.get("metadata") or {}
        if not isinstance(meta, dict) or META_PARAMETERS not in meta:
            continue  # a plain micro endpoint, not offered as a tool
        where = f"{service}/{name}"
        if (bad_name := name_problem(name, where)) is not None:
            problems.append(bad_name)
            continue
        try:
            parameters, validator = checked_parameters(json.loads(meta[META_PARAMETERS]))
        except (ValueError, TypeError) as exc:
            problems.append(f"{where}: parameters is not a JSON Schema object: {str(exc)[:200]}")
            continue
        command = meta.get(META_COMMAND) or None
        if command is not None and not COMMAND.match(str(command)):
            problems.append(f"{where}: command {command!r} ignored (must look like /name)")
            command = None
        tools.append(
            Tool(
                name=name,
                description=str(meta.get(META_DESCRIPTION) or ""),
                parameters=parameters,
                subject=str(endpoint.get("subject") or name),
                service=service,
                version=version,
                command=command,
                validator=validator,
            )
        )
    return tools, problems


class ToolSource(Protocol):
    """Tools from elsewhere than NATS discovery (an MCP server): its current list, [] while it is down;
    it calls `on_change` (set by `watch`) whenever that list changes."""

    @property
    def name(self) -> str: ...

    def tools(self) -> list[Tool]: ...

    def watch(self, on_change: Callable[[], None]) -> None: ...


@dataclass(frozen=True)
class SkillFilter:
    """SKILLS_ALLOW / SKILLS_DENY: comma-separated glob patterns on the tool or its service's name.
    An empty allow list allows everything; deny wins."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @classmethod
    def parse(cls, allow: str, deny: str) -> SkillFilter:
        def split(raw: str) -> tuple[str, ...]:
            return tuple(p.strip() for p in raw.split(",") if p.strip())

        return cls(split(allow), split(deny))

    def admits(self, tool: Tool) -> bool:
        def hit(patterns: Iterable[str]) -> bool:
            return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in (tool.name, tool.service))

        return (not self.allow or hit(self.allow)) and not hit(self.deny)


@dataclass
class _Instance:
    seen_at: float
    tools: list[Tool]


class SkillRegistry:
    """The live tools, refreshed by `run()` (a background task for the life of nlp)."""

    def __init__(
        self,
        nc: Client,
        admitted: SkillFilter,
        interval_s: float = 5.0,
        collect_s: float = 2.0,
        quiet_s: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        sources: Sequence[ToolSource] = (),
    ) -> None:
        self._nc = nc
        self._filter = admitted
        self._sources = list(sources)  # in SKILLS_MCP_SERVERS order: on a shared name the first wins
        self._interval_s = interval_s
        self._collect_s = collect_s
        self._quiet_s = quiet_s
        self._stale_after_s = 1.5 * interval_s
        self._clock = clock
        self._instances: dict[str, _Instance] = {}
        self._raw: dict[str, bytes] = {}  # instance id → its last INFO reply, parsed again only on change
        self._discovered: dict[str, Tool] = {}  # NATS skills, merged
        self._tools: dict[str, Tool] = {}
        self._commands: dict[str, Tool] = {}
        self._reported: set[str] = set()
        self._log = get_logger("wxbot.nlp.skills")
        for source in self._sources:
            source.watch(self.refresh)

    # -- what is offered ------------------------------------------------------------------------

    def tools(self) -> dict[str, Tool]:
        return self._tools

    def definitions(self) -> list[dict[str, Any]]:
        return [t.definition() for t in self._tools.values()]

    def command(self, text: str) -> tuple[Tool, str] | None:
        """The tool whose command starts `text` (`/weather 北京` → weather tool, "北京"), if any."""
        head, _, rest = text.strip().partition(" ")
        tool = self._commands.get(head.lower())
        return (tool, rest.strip()) if tool is not None else None

    # -- discovery ------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            started = self._clock()
            try:
                await self.discover_once()
            except (nats.errors.Error, TimeoutError) as exc:  # NATS reconnecting: keep the last view
                self._log.warning("skills_discovery_failed", error=repr(exc))
            await asyncio.sleep(max(0.0, self._interval_s - (self._clock() - started)))

    async def discover_once(self) -> None:
        now = self._clock()  # the round's start: an instance's age counts whole rounds
        replies = await self._collect()
        for raw in replies:
            try:
                info = json.loads(raw)
                instance = str(info["id"])
            except (ValueError, KeyError, TypeError):
                continue
            if self._raw.get(instance) != raw:
                self._raw[instance] = raw
                tools, problems = tools_of(info)
                self._report(problems)
                self._instances[instance] = _Instance(now, tools)
            else:
                self._instances[instance].seen_at = now
        for instance in [i for i, s in self._instances.items() if now - s.seen_at > self._stale_after_s]:
            del self._instances[instance]
            self._raw.pop(instance, None)
        self._discovered = self._merge(s.tools for s in self._instances.values())
        self.refresh()

    def refresh(self) -> None:
        """Recompute what is offered: after a discovery round, or when a `ToolSource` changed."""
        self._publish(self._combine())

    async def _collect(self) -> list[bytes]:
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        replies: list[bytes] = []
        try:
            await self._nc.publish(INFO_SUBJECT, b"", reply=inbox)
            ends_at = self._clock() + self._collect_s
            while (left := ends_at - self._clock()) > 0:
                try:
                    msg = await sub.next_msg(timeout=min(self._quiet_s, left))
                except TimeoutError:
                    break
                replies.append(msg.data)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        return replies

    def _merge(self, per_instance: Iterable[list[Tool]]) -> dict[str, Tool]:
        by_name: dict[str, list[Tool]] = {}
        for tools in per_instance:
            for tool in tools:
                if self._filter.admits(tool):
                    by_name.setdefault(tool.name, []).append(tool)
        merged: dict[str, Tool] = {}
        for name, candidates in sorted(by_name.items()):
            best = max(candidates, key=lambda t: _version_key(t.version))
            rivals = [t for t in candidates if not t.same_contract(best)]
            if any(_version_key(t.version) == _version_key(best.version) for t in rivals):
                self._report([f"{name}: live instances of version {best.version} disagree on it; not offered"])
                continue
            if rivals:
                self._report([f"{name}: definitions differ across versions; offering version {best.version}'s"])
            merged[name] = best
        return merged

    def _combine(self) -> dict[str, Tool]:
        """NATS skills first, then each source's tools under names still free."""
        combined = dict(self._discovered)
        for source in self._sources:
            for tool in source.tools():
                if not self._filter.admits(tool):
                    continue
                holder = combined.get(tool.name)
                if holder is None:
                    combined[tool.name] = tool
                elif holder.source == "nats":
                    self._report(
                        [
                            f"{tool.name}: MCP server {source.name}'s tool is not offered: the NATS skill "
                            f"{holder.service} has that name (SKILLS_DENY={holder.service} would offer it)"
                        ]
                    )
                elif holder.service != tool.service:
                    self._report(
                        [
                            f"{tool.name}: MCP server {source.name}'s tool is not offered: MCP server "
                            f"{holder.service}, listed before it in SKILLS_MCP_SERVERS, has that name"
                        ]
                    )
        combined = dict(sorted(combined.items()))
        if len(combined) > MAX_TOOLS:
            self._report([f"{len(combined)} tools live; offering the first {MAX_TOOLS} by name"])
            combined = dict(list(combined.items())[:MAX_TOOLS])
        return combined

    def _publish(self, tools: dict[str, Tool]) -> None:
        added, removed = tools.keys() - self._tools.keys(), self._tools.keys() - tools.keys()
        if added or removed:
            self._log.info("skills_changed", added=sorted(added), removed=sorted(removed), offered=len(tools))
        self._tools = tools
        self._commands = {t.command.lower(): t for t in tools.values() if t.command}

    def _report(self, problems: Iterable[str]) -> None:
        for problem in problems:
            if problem not in self._reported:
                self._reported.add(problem)
                self._log.warning("skill_not_offered", problem=problem)
