"""The skill contract, shared by the caller (nlp) and the SDK (wxbot-skill); docs/skills.md.

A skill is a NATS micro service (ADR-32, `nats.micro`): `$SRV.PING/INFO/STATS` discovery for free.
Each endpoint is one tool: the endpoint name is the tool name; its metadata (strings only, ADR-32)
carries `description`, `parameters` (a JSON Schema of the arguments object, JSON-encoded) and
optionally `command` (a chat command such as `/weather` that calls the tool without the LLM).
The request body is the JSON arguments; the reply body is JSON, or a micro service error
(headers `Nats-Service-Error` / `Nats-Service-Error-Code`). Requests carry W3C trace context and,
when a user's message caused the call, who is asking (`CallContext`, the `Wxbot-*` headers).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from google.protobuf.message import DecodeError

from wxbot_proto.events.v1 import events_pb2 as ev

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


# -- who is asking ------------------------------------------------------------------------------
# Request headers nlp adds to a tool call made while answering a user's message. Values are
# percent-encoded UTF-8 (as in a URL; plain ASCII ids travel unchanged), so that no id a channel
# hands us can break a header line.
HEADER_CONVERSATION = "Wxbot-Conversation-Id"  # EventMeta.conversation_id: whose memory, whose chat
HEADER_USER = "Wxbot-User-Id"  # ReplyAddress.user_id: the sender's id in its channel
HEADER_CHANNEL = "Wxbot-Channel"  # the Channel enum's name, lower case, without CHANNEL_ (wecom_app…)
HEADER_MESSAGE = "Wxbot-Message-Id"  # event id of the user's message (MessageReceived) being answered
HEADER_REPLY_TO = "Wxbot-Reply-To"  # the ReplyAddress, protobuf, base64url: opaque, for messages sent later
_SAFE = ":@._-~+=/!$&'()*,;"


@functools.cache
def channel_name(channel: int) -> str:
    """`CHANNEL_WECOM_APP` → `wecom_app` (what `Wxbot-Channel` carries); cached, as it runs per message."""
    known = {number: name for name, number in ev.Channel.items()}
    return known.get(ev.Channel.ValueType(channel), "").removeprefix("CHANNEL_").lower()


def channel_number(name: str) -> int:
    """The inverse of `channel_name`; 0 (unspecified) for a name that is not a channel."""
    return dict(ev.Channel.items()).get(f"CHANNEL_{name.upper()}", ev.CHANNEL_UNSPECIFIED)


@dataclass(frozen=True)
class CallContext:
    """Who a tool call is for: the user whose message the model is answering.

    A skill keys what it keeps per user on (`channel`, `user_id`) — or per chat on
    `conversation_id` — and may hand `reply_to` back later to speak to the user unasked (the
    reminders skill does: docs/skills.md). Absent when nobody's message caused the call.
    """

    conversation_id: str
    user_id: str
    channel: str
    message_id: str = ""
    reply_to: str = ""  # base64url of the ReplyAddress protobuf: opaque to every service but the gateway

    @classmethod
    def of(cls, meta: ev.EventMeta, address: ev.ReplyAddress) -> CallContext:
        """The context of a call made while answering the message whose event carries `meta`."""
        return cls(
            conversation_id=meta.conversation_id,
            user_id=address.user_id,
            channel=channel_name(meta.channel),
            message_id=meta.correlation_id or meta.event_id,
            reply_to=base64.urlsafe_b64encode(address.SerializeToString()).decode(),
        )

    def to_headers(self) -> dict[str, str]:
        values = {
            HEADER_CONVERSATION: self.conversation_id,
            HEADER_USER: self.user_id,
            HEADER_CHANNEL: self.channel,
            HEADER_MESSAGE: self.message_id,
            HEADER_REPLY_TO: self.reply_to,
        }
        return {k: quote(v, safe=_SAFE) for k, v in values.items() if v}

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> CallContext | None:
        """The context of a request, or None when it carries none (no conversation, or no user)."""
        lower = {k.lower(): v for k, v in (headers or {}).items()}

        def get(name: str) -> str:
            return unquote(lower.get(name.lower(), ""))

        conversation, user = get(HEADER_CONVERSATION), get(HEADER_USER)
        if not conversation or not user:
            return None
        return cls(conversation, user, get(HEADER_CHANNEL), get(HEADER_MESSAGE), get(HEADER_REPLY_TO))

    def reply_address(self) -> ev.ReplyAddress | None:
        """The decoded `reply_to`, or None when there is none or it is not one."""
        if not self.reply_to:
            return None
        try:
            return ev.ReplyAddress.FromString(base64.urlsafe_b64decode(self.reply_to.encode()))
        except (binascii.Error, ValueError, DecodeError):
            return None
