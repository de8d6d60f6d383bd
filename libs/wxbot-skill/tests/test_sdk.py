"""The SDK on a real nats-server: the schema from type hints, calls answered concurrently, and
every failure a micro service error with a plain description."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import Field

from wxbot_common.skill_contract import ERROR_CODE_HEADER, ERROR_HEADER
from wxbot_devkit.launch import NatsServer
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_skill import CallContext, Skill, SkillError

pytestmark = pytest.mark.timeout(30)

skill = Skill("sdk-test", "1.2.3", "tools for the SDK's tests")
release = asyncio.Event()


@skill.tool(command="/echo")
async def echo(text: Annotated[str, Field(description="what to say back")], times: int = 1) -> list[str]:
    """Say the text back, `times` times."""
    return [text] * times


@skill.tool(name="wait-for-release")
async def wait() -> str:
    """Wait until the test lets go."""
    await release.wait()
    return "released"


@skill.tool
async def fail(how: Literal["plainly", "badly"]) -> None:
    """Fail in one of two ways."""
    if how == "plainly":
        raise SkillError("the printer is on fire")
    raise RuntimeError("secret internals /etc/passwd")


@skill.tool
async def whoami(greeting: str, caller: CallContext) -> dict[str, str]:
    """Say who is asking."""
    address = caller.reply_address()
    return {
        "greeting": greeting,
        "conversation": caller.conversation_id,
        "user": caller.user_id,
        "channel": caller.channel,
        "message": caller.message_id,
        "corp": address.corp_id if address is not None else "",
    }


@skill.tool
async def maybe_who(caller: CallContext | None = None) -> str:
    """Say who is asking, if anyone."""
    return caller.user_id if caller is not None else "nobody"


@pytest.fixture(scope="module")
async def nc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    server = NatsServer(Path(tmp_path_factory.mktemp("nats")))
    await server.start()
    client = await nats.connect(server.url)
    service = await skill.start(client)
    yield client
    await service.stop()
    await client.drain()
    await server.stop()


def error_of(msg: Msg) -> tuple[str, str] | None:
    headers = msg.headers or {}
    return (headers[ERROR_CODE_HEADER], headers[ERROR_HEADER]) if ERROR_CODE_HEADER in headers else None


async def test_info_offers_each_tool_with_its_schema_from_the_type_hints(nc: Client) -> None:
    info = json.loads((await nc.request("$SRV.INFO.sdk-test", b"", timeout=2)).data)
    assert (info["name"], info["version"], info["description"]) == ("sdk-test", "1.2.3", "tools for the SDK's tests")
    endpoints = {e["name"]: e for e in info["endpoints"]}
    assert sorted(endpoints) == ["echo", "fail", "maybe_who", "wait-for-release", "whoami"]
    meta = endpoints["echo"]["metadata"]
    assert meta["description"] == "Say the text back, `times` times." and meta["command"] == "/echo"
    schema = json.loads(meta["parameters"])
    assert schema["type"] == "object" and schema["required"] == ["text"] and schema["additionalProperties"] is False
    assert schema["properties"]["text"]["description"] == "what to say back"
    assert schema["properties"]["times"] == {"default": 1, "title": "Times", "type": "integer"}
    assert json.loads(endpoints["fail"]["metadata"]["parameters"])["properties"]["how"]["enum"] == ["plainly", "badly"]


@pytest.mark.parametrize(
    ("subject", "args", "reply", "error"),
    [
        ("echo", {"text": "你好", "times": 2}, ["你好", "你好"], None),
        (
            "echo",
            {"text": "hi", "times": "many"},
            None,
            ("400", "invalid arguments: times: Input should be a valid integer"),
        ),
        (
            "echo",
            {"text": "hi", "colour": "red"},
            None,
            ("400", "invalid arguments: colour: Extra inputs are not permitted"),
        ),
        ("echo", {}, None, ("400", "invalid arguments: text: Field required")),
        ("fail", {"how": "plainly"}, None, ("500", "the printer is on fire")),
        ("fail", {"how": "badly"}, None, ("500", "the skill failed unexpectedly")),  # no internals leak
    ],
)
async def test_calls_answer_json_or_a_plain_service_error(
    nc: Client, subject: str, args: dict[str, object], reply: object, error: tuple[str, str] | None
) -> None:
    msg = await nc.request(subject, json.dumps(args).encode(), timeout=2)
    got = error_of(msg)
    if error is None:
        assert got is None and json.loads(msg.data) == reply
    else:
        assert got is not None and got[0] == error[0] and got[1].startswith(error[1])


async def test_a_slow_call_does_not_hold_up_the_next(nc: Client) -> None:
    slow = asyncio.create_task(nc.request("wait-for-release", b"{}", timeout=5))
    quick = await nc.request("echo", b'{"text": "still here"}', timeout=2)  # nats.micro alone would queue it
    assert json.loads(quick.data) == ["still here"] and not slow.done()
    release.set()
    assert json.loads((await slow).data) == "released"


def test_a_tool_must_be_async_typed_and_documented() -> None:
    s = Skill("rules")

    def sync(x: int) -> int:
        """Sync."""
        return x

    async def untyped(x) -> int:  # type: ignore[no-untyped-def]
        """Untyped."""
        return 1

    async def undocumented(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="async"):
        s.tool(sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a type hint"):
        s.tool(untyped)
    with pytest.raises(ValueError, match="docstring"):
        s.tool(undocumented)
    with pytest.raises(ValueError, match="command"):
        s.tool(command="weather")(wait)


async def test_a_call_context_parameter_receives_the_caller_headers_and_is_not_in_the_schema(nc: Client) -> None:
    info = json.loads((await nc.request("$SRV.INFO.sdk-test", b"", timeout=2)).data)
    schemas = {e["name"]: json.loads(e["metadata"]["parameters"]) for e in info["endpoints"]}
    assert list(schemas["whoami"]["properties"]) == ["greeting"] and schemas["whoami"]["required"] == ["greeting"]
    assert schemas["maybe_who"].get("properties", {}) == {}
    meta = ev.EventMeta(
        event_id="accepted-1",
        correlation_id="received-1",
        conversation_id="wecom:ww1:1000002:user:张三 x\r\nInjected: 1",  # hostile ids survive the trip unharmed
        channel=ev.CHANNEL_WECOM_APP,
    )
    context = CallContext.of(meta, ev.ReplyAddress(corp_id="ww1", agent_id="1000002", user_id="张三"))
    headers = context.to_headers()
    assert all("\r" not in v and "\n" not in v for v in headers.values())
    msg = await nc.request("whoami", b'{"greeting": "hi"}', timeout=2, headers=headers)
    assert json.loads(msg.data) == {
        "greeting": "hi",
        "conversation": meta.conversation_id,
        "user": "张三",
        "channel": "wecom_app",
        "message": "received-1",
        "corp": "ww1",
    }
    maybe = await nc.request("maybe_who", b"{}", timeout=2, headers=headers)
    assert json.loads(maybe.data) == "张三"


async def test_without_caller_headers_a_required_context_is_a_400_and_an_optional_one_none(nc: Client) -> None:
    msg = await nc.request("whoami", b'{"greeting": "hi"}', timeout=2)
    assert error_of(msg) == ("400", "whoami needs to know who is asking (the Wxbot-* caller headers)")
    assert json.loads((await nc.request("maybe_who", b"{}", timeout=2)).data) == "nobody"
    smuggled = await nc.request("whoami", b'{"greeting": "hi", "caller": {"user_id": "root"}}', timeout=2)
    assert error_of(smuggled) is not None  # the model cannot pass a caller as an argument
