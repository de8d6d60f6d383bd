"""The skill contract, shared by the caller (nlp) and the SDK (wxbot-skill); docs/skills.md.

A skill is a NATS micro service (ADR-32, `nats.micro`): `$SRV.PING/INFO/STATS` discovery for free.
Each endpoint is one tool: the endpoint name is the tool name; its metadata (strings only, ADR-32)
carries `description`, `parameters` (a JSON Schema of the arguments object, JSON-encoded) and
optionally `command` (a chat command such as `/weather` that calls the tool without the LLM).
The request body is the JSON arguments; the reply body is JSON, or a micro service error
(headers `Nats-Service-Error` / `Nats-Service-Error-Code`). Requests carry W3C trace context.
"""

from __future__ import annotations

import json
import re
from typing import Any

META_DESCRIPTION = "description"
META_PARAMETERS = "parameters"
META_COMMAND = "command"

ERROR_HEADER = "Nats-Service-Error"  # as nats.micro.request.ERROR_HEADER
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
CODE_BAD_ARGUMENTS = "400"  # the arguments do not fit the schema
CODE_FAILED = "500"  # the skill could not do it (its own description says why)

# OpenAI function names: a-z, A-Z, 0-9, underscore, dash, at most 64 (micro endpoint names are a superset
# only by length).
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
COMMAND = re.compile(r"^/[^\s/]{1,32}$")


def tool_metadata(description: str, parameters: dict[str, Any], command: str | None = None) -> dict[str, str]:
    """The endpoint metadata that makes an endpoint a tool."""
    meta = {META_DESCRIPTION: description, META_PARAMETERS: json.dumps(parameters, ensure_ascii=False)}
    if command:
        if not COMMAND.match(command):
            raise ValueError(f"command must look like /name (no spaces): {command!r}")
        meta[META_COMMAND] = command
    return meta


def tool_span_name(tool: str) -> str:
    """One name for both ends of a call (GenAI semantic conventions: `execute_tool {name}`)."""
    return f"execute_tool {tool}"
