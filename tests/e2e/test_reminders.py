"""Reminders end to end: the (fake) model turns "明天上午9点提醒我开会" into a tool call, the
skills service schedules it in NATS, and when it fires the user gets one message through the
normal pipeline — safety, the gateway, the WeCom API — also when every wxbot process was restarted
in between, and with two skills replicas taking the firings.

The model is scripted: each test says which tool call a question makes (the time is a few
seconds ahead, not tomorrow morning); once results are back it answers with what the tool said.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import nats
import pytest

from tests.e2e.harness import CONFIG, World, logged, running_world, send_text
from wxbot_common.nats.subjects import EventKind
from wxbot_common.skill_contract import CallContext
from wxbot_devkit.fakes.llm import ChatRequest, ToolCall
from wxbot_devkit.fakes.waiting import wait_until_async
from wxbot_devkit.fakes.wecom import SentMessage
from wxbot_devkit.system import Replica
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_skills.reminders.book import REMINDERS_STREAM, due_subject
from wxbot_skills.reminders.records import owner_key

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

ZONE = ZoneInfo("Asia/Shanghai")
REMINDER_TOOLS = 4
SECRET = "暗号甲乙"  # a listed term: safety masks it in whatever is sent
SCRIPT: dict[str, ToolCall] = {}  # question → the call the model makes for it


def model(request: ChatRequest) -> str | list[ToolCall]:
    if request.tool_results:
        return "好的：" + " | ".join(request.tool_results.values())
    call = SCRIPT.get(request.last_user_message)
    if call is None or not request.may_call_tools:
        return "no tools needed"
    return [ToolCall(call.name, call.arguments)]


@pytest.fixture(scope="module")
async def rw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {"REMINDERS_MIN_INTERVAL_S": "1", "SHUTDOWN_GRACE_S": "2", "SAFETY_WORDS": SECRET}
    async with running_world(tmp_path_factory.mktemp("reminders"), env, replicas={"skills": 2}, reply=model) as world:
        await offered(world)
        yield world


async def offered(world: World, within_s: float = 20) -> None:
    """Wait until nlp offers the reminders tools (discovery runs every 5 s)."""
    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            text = (await client.get(f"{world.stack.service_urls()['nlp'][0]}/metrics")).text
            count = next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("wxbot_nlp_skills_offered "))
            if count >= REMINDER_TOOLS:
                return
            assert time.monotonic() < deadline, "the reminders tools were not offered"
            await asyncio.sleep(0.2)


def soon(seconds: float) -> tuple[str, float]:
    """A local time `seconds` ahead, as the model writes it (ISO, no offset), and as epoch seconds."""
    at = (datetime.now(UTC) + timedelta(seconds=seconds)).astimezone(ZONE).replace(microsecond=0)
    return at.replace(tzinfo=None).isoformat(), at.timestamp()


async def ask(world: World, user: str, question: str, call: ToolCall) -> Any:
    """Send `question`, for which the model makes `call`; the tool's result as the user was told it."""
    SCRIPT[question] = call
    before = len(world.wecom.messages_for(user))
    await send_text(world, user, question)
    reply = (await world.wecom.wait_for_messages(user, before + 1, timeout=20))[before].content
    assert reply.startswith("好的："), reply
    return json.loads(reply.removeprefix("好的："))


def reminders_of(world: World, user: str, text: str) -> list[SentMessage]:
    return [m for m in world.wecom.messages_for(user) if m.content == f"⏰ 提醒：{text}"]


async def fired(world: World, user: str) -> int:
    """How many times the server fired `user`'s reminders (the messages on their due subject)."""
    address = ev.ReplyAddress(corp_id=CONFIG["corpid"], agent_id=CONFIG["agentid"], user_id=user)
    owner = owner_key(CallContext.of(ev.EventMeta(channel=ev.CHANNEL_WECOM_APP), address))
    nc = await nats.connect(world.stack.nats.url)
    try:
        info = await nc.jetstream().stream_info(REMINDERS_STREAM, subjects_filter=due_subject(owner))
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.drain()


async def drafted(world: World, user: str) -> list[ev.ReplyDrafted]:
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    return [
        d
        for d in (ev.ReplyDrafted.FromString(raw) for raw in await logged(world, EventKind.DRAFTED, conversation))
        if d.source == ev.REPLY_SOURCE_SKILL
    ]


async def test_remind_me_tomorrow_at_nine_fires_once_at_that_time_through_the_pipeline(rw: World) -> None:
    user = "e2e-remind-once"
    at, at_epoch = soon(6)
    result = await ask(rw, user, "明天上午9点提醒我开会", ToolCall("create_reminder", {"text": "开会", "at": at}))
    assert result["scheduled"] is True and result["next"] == f"{at}+08:00"
    await rw.wecom.wait_for_messages(user, 2, timeout=20)
    [message] = reminders_of(rw, user, "开会")
    assert at_epoch <= message.received_at < at_epoch + 5  # at its time, not before
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    [approved] = [
        a
        for a in (ev.ReplyApproved.FromString(r) for r in await logged(rw, EventKind.APPROVED, conversation))
        if a.source == ev.REPLY_SOURCE_SKILL
    ]
    assert approved.text == "⏰ 提醒：开会"  # safety checked it on the way out

    async def recorded() -> bool:  # ReplySent follows the WeCom call: it may land just after the message
        sent = [ev.ReplySent.FromString(r) for r in await logged(rw, EventKind.SENT, conversation)]
        return message.msgid in [m for s in sent for m in s.provider_msg_ids]

    await wait_until_async(recorded, 10, "the gateway's record of sending the reminder")
    await asyncio.sleep(3)  # a second delivery would come now, if any
    assert len(reminders_of(rw, user, "开会")) == 1 and await fired(rw, user) == 1


async def test_a_fired_reminder_is_checked_by_safety_like_any_reply(rw: World) -> None:
    user = "e2e-remind-masked"
    at, _ = soon(4)
    await ask(rw, user, "4秒后提醒我那件事", ToolCall("create_reminder", {"text": f"说出{SECRET}", "at": at}))
    messages = await rw.wecom.wait_for_messages(user, 2, timeout=20)
    reminder = messages[1].content
    assert reminder.startswith("⏰ 提醒：说出") and "＊" in reminder and SECRET not in reminder
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    approved = [ev.ReplyApproved.FromString(r) for r in await logged(rw, EventKind.APPROVED, conversation)]
    assert [a.masked for a in approved if a.source == ev.REPLY_SOURCE_SKILL] == [True]


async def test_a_reminder_fires_after_every_wxbot_process_was_restarted(rw: World) -> None:
    user = "e2e-remind-restart"
    early, early_epoch = soon(5)
    late, late_epoch = soon(30)
    await ask(rw, user, "5秒后提醒我关火", ToolCall("create_reminder", {"text": "关火", "at": early}))
    await ask(rw, user, "30秒后提醒我收衣服", ToolCall("create_reminder", {"text": "收衣服", "at": late}))
    replicas = list(rw.stack.replicas)
    await asyncio.gather(*(r.child.stop() for r in replicas))
    deadline = time.monotonic() + 20
    while await fired(rw, user) < 1:  # the first fires while nothing of wxbot runs
        assert time.monotonic() < deadline, "the first reminder did not fire"
        await asyncio.sleep(0.2)
    assert not reminders_of(rw, user, "关火")
    await start_again([r for r in replicas if r.service == "context"])
    await start_again([r for r in replicas if r.service != "context"])
    assert time.time() < late_epoch, "the restart took too long to test a reminder firing after it"
    await rw.wecom.wait_for_messages(user, 4, timeout=60)
    [first] = reminders_of(rw, user, "关火")
    [second] = reminders_of(rw, user, "收衣服")
    assert first.received_at > early_epoch and late_epoch <= second.received_at < late_epoch + 5
    await asyncio.sleep(2)
    assert len(rw.wecom.messages_for(user)) == 4 and await fired(rw, user) == 2


async def start_again(replicas: list[Replica]) -> None:
    await asyncio.gather(*(r.start() for r in replicas))


async def test_a_user_lists_and_cancels_their_reminders_and_cannot_cancel_anothers(rw: World) -> None:
    user, other = "e2e-remind-list", "e2e-remind-other"
    at, _ = soon(15)
    kept = await ask(rw, user, "15秒后提醒我喝水", ToolCall("create_reminder", {"text": "喝水", "at": at}))
    dropped = await ask(rw, user, "15秒后提醒我吃药", ToolCall("create_reminder", {"text": "吃药", "at": at}))
    listed = await ask(rw, user, "我有哪些提醒", ToolCall("list_reminders"))
    assert sorted((r["id"], r["text"]) for r in listed["reminders"]) == sorted(
        [(kept["id"], "喝水"), (dropped["id"], "吃药")]
    )
    SCRIPT[f"取消 {kept['id']}"] = ToolCall("cancel_reminder", {"reminder_id": kept["id"]})
    await send_text(rw, other, f"取消 {kept['id']}")  # not theirs to cancel
    [refusal] = await rw.wecom.wait_for_messages(other, 1, timeout=20)
    assert f"no reminder with id '{kept['id']}'" in refusal.content and "nothing was cancelled" in refusal.content
    cancelled = await ask(rw, user, "不用提醒我吃药了", ToolCall("cancel_reminder", {"reminder_id": dropped["id"]}))
    assert cancelled == {"cancelled": True, "id": dropped["id"], "text": "吃药"}
    unknown = await send_and_read(rw, user, "取消 abc123", ToolCall("cancel_reminder", {"reminder_id": "abc123"}))
    assert f"(their reminders: {kept['id']})" in unknown
    await rw.wecom.wait_for_messages(user, 6, timeout=30)  # five answers, and the one kept fires
    assert len(reminders_of(rw, user, "喝水")) == 1 and not reminders_of(rw, user, "吃药")
    assert await fired(rw, user) == 1 and not rw.wecom.messages_for(other)[1:]


async def send_and_read(world: World, user: str, question: str, call: ToolCall) -> str:
    SCRIPT[question] = call
    before = len(world.wecom.messages_for(user))
    await send_text(world, user, question)
    return (await world.wecom.wait_for_messages(user, before + 1, timeout=20))[before].content


@pytest.mark.parametrize(
    ("question", "arguments", "says"),
    [
        ("提醒我昨天开会", {"text": "开会", "at": "2020-05-01T09:00:00"}, "is in the past (it is now "),
        ("提醒我2099年开会", {"text": "开会", "at": "2099-05-01T09:00:00"}, "more than 366 days ahead"),
    ],
)
async def test_a_time_in_the_past_or_absurdly_far_is_refused_to_the_model_and_nothing_is_scheduled(
    rw: World, question: str, arguments: dict[str, str], says: str
) -> None:
    user = f"e2e-remind-bad-{arguments['at'][:4]}"
    reply = await send_and_read(rw, user, question, ToolCall("create_reminder", arguments))
    assert says in reply and "nothing was scheduled" in reply
    listed = await ask(rw, user, "我的提醒", ToolCall("list_reminders"))
    assert listed["reminders"] == []


async def test_a_repeating_reminder_fires_repeatedly_each_firing_delivered_once_by_two_replicas(rw: World) -> None:
    user = "e2e-remind-repeat"
    created = await ask(rw, user, "每2秒提醒我眨眼", ToolCall("create_reminder", {"text": "眨眼", "every": "2s"}))
    assert created["repeat"] == "every 2s"
    deadline = time.monotonic() + 30
    while len(reminders_of(rw, user, "眨眼")) < 3:
        assert time.monotonic() < deadline, "the reminder did not fire three times"
        await asyncio.sleep(0.2)
    await ask(rw, user, "别再提醒我眨眼了", ToolCall("cancel_reminder", {"reminder_id": created["id"]}))
    await asyncio.sleep(3)  # firings already on their way still arrive; none after that
    times = await fired(rw, user)
    await asyncio.sleep(4)
    assert await fired(rw, user) == times  # cancelled: the server fires no more
    delivered = reminders_of(rw, user, "眨眼")
    assert len(delivered) == times >= 3  # each firing reached the user exactly once
    events = await drafted(rw, user)
    assert len(events) == times and len({e.meta.event_id for e in events}) == times
    handled = [
        sum("reminder_fired" in line for line in r.child.lines) for r in rw.stack.replicas if r.service == "skills"
    ]
    assert len(handled) == 2 and sum(handled) >= times  # two replicas shared the durable
