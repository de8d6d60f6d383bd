"""The reminders skill on a real nats-server: its tools as nlp calls them (caller headers and all),
the schedules they leave in the reminders stream, and a fired reminder entering the event log as
one ReplyDrafted. The whole pipeline around it is tests/e2e/test_reminders.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import EVENTS_STREAM, EventKind
from wxbot_common.nats.topology import StreamSettings, ensure_topology
from wxbot_common.skill_contract import ERROR_CODE_HEADER, ERROR_HEADER, CallContext
from wxbot_devkit.launch import NatsServer
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_skills.reminders.book import REMINDERS_STREAM, ReminderBook, due_subject, schedule_subject
from wxbot_skills.reminders.firing import DueReminders
from wxbot_skills.reminders.metrics import ReminderMetrics
from wxbot_skills.reminders.records import owner_key
from wxbot_skills.reminders.tools import RemindersTools, limits_of, reminders_skill

pytestmark = pytest.mark.timeout(60)

ZONE = "Asia/Shanghai"
SHANGHAI = ZoneInfo(ZONE)
MAX_PER_USER = 3


def caller(user: str, message: str = "", chat: str = "") -> CallContext:
    address = ev.ReplyAddress(corp_id="ww-test", agent_id="1000002", user_id=user, chat_id=chat)
    meta = ev.EventMeta(
        event_id=message or f"accepted-{user}",
        correlation_id=message,
        conversation_id=f"wecom:ww-test:1000002:user:{user}",
        channel=ev.CHANNEL_WECOM_APP,
    )
    return CallContext.of(meta, address)


@pytest.fixture(scope="module")
async def nc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    server = NatsServer(Path(tmp_path_factory.mktemp("nats")))
    await server.start()
    client = await nats.connect(server.url)
    js = client.jetstream()
    await ensure_topology(js, StreamSettings(consumers=()))
    book = ReminderBook(js, 1, timedelta(hours=1))
    await book.ensure()
    metrics = ReminderMetrics(CollectorRegistry())
    tools = RemindersTools(book, ZONE, limits_of(366, 1), MAX_PER_USER, metrics)
    skill = reminders_skill(tools, ZONE)
    service = await skill.start(client)
    due = DueReminders(js, EventPublisher(js, trace.get_tracer("test")), trace.get_tracer("test"), metrics, 4)
    consumer = asyncio.create_task(due.run())
    yield client
    consumer.cancel()
    await service.stop()
    await client.drain()
    await server.stop()


async def call(nc: Client, tool: str, args: dict[str, Any], who: CallContext | None) -> dict[str, Any]:
    """What nlp gets back: the JSON result, or {"error": description, "code": code}."""
    headers = who.to_headers() if who is not None else None
    msg = await nc.request(tool, json.dumps(args, ensure_ascii=False).encode(), timeout=5, headers=headers)
    if msg.headers and ERROR_CODE_HEADER in msg.headers:
        return {"error": msg.headers[ERROR_HEADER], "code": msg.headers[ERROR_CODE_HEADER]}
    result: dict[str, Any] = json.loads(msg.data)
    return result


def local(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).astimezone(SHANGHAI).replace(microsecond=0, tzinfo=None).isoformat()


async def schedules(nc: Client) -> dict[str, int]:
    info = await nc.jetstream().stream_info(REMINDERS_STREAM, subjects_filter="wxbot.remind.sched.>")
    return dict(info.state.subjects or {})


async def drafted_for(nc: Client, conversation_id: str) -> list[ev.ReplyDrafted]:
    js, found, seq = nc.jetstream(), list[ev.ReplyDrafted](), 1
    subject = EventKind.DRAFTED.subject(conversation_id)
    while True:
        try:
            msg = await js.get_msg(EVENTS_STREAM, seq, subject=subject, next=True)
        except NotFoundError:
            return found
        found.append(ev.ReplyDrafted.FromString(msg.data or b""))
        seq = (msg.seq or seq) + 1


async def test_the_caller_is_not_a_parameter_the_model_fills(nc: Client) -> None:
    info = json.loads((await nc.request("$SRV.INFO.reminders", b"", timeout=2)).data)
    tools = {e["name"]: json.loads(e["metadata"]["parameters"]) for e in info["endpoints"]}
    assert sorted(tools) == ["cancel_reminder", "create_reminder", "current_time", "list_reminders"]
    assert all("caller" not in schema["properties"] for schema in tools.values() if "properties" in schema)
    assert set(tools["create_reminder"]["properties"]) == {"text", "at", "repeat", "every"}
    assert tools["create_reminder"]["required"] == ["text"]
    description = next(e for e in info["endpoints"] if e["name"] == "create_reminder")["metadata"]["description"]
    assert "Asia/Shanghai" in description


async def test_current_time_is_local_to_the_deployment(nc: Client) -> None:
    result = await call(nc, "current_time", {}, None)
    now = datetime.fromisoformat(result["now"])
    assert result["time_zone"] == ZONE and now.utcoffset() == timedelta(hours=8)
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5
    assert result["weekday"].startswith("星期")


async def test_a_reminder_fires_once_at_its_time_into_the_event_log(nc: Client) -> None:
    who = caller("alice", "msg-alice-1")
    at = local(timedelta(seconds=3))
    created = await call(nc, "create_reminder", {"text": "开会", "at": at}, who)
    assert created["scheduled"] is True and created["repeat"] == "once" and created["next"] == f"{at}+08:00"
    listed = await call(nc, "list_reminders", {}, who)
    assert [(r["id"], r["text"]) for r in listed["reminders"]] == [(created["id"], "开会")]
    deadline = time.monotonic() + 15
    while not (drafted := await drafted_for(nc, who.conversation_id)):
        assert time.monotonic() < deadline, "the reminder did not fire"
        await asyncio.sleep(0.2)
    assert datetime.now(UTC) >= datetime.fromisoformat(at).replace(tzinfo=SHANGHAI)
    [reply] = drafted
    assert reply.text == "⏰ 提醒：开会" and reply.source == ev.REPLY_SOURCE_SKILL
    assert reply.reply_to.user_id == "alice" and reply.reply_to.corp_id == "ww-test"
    assert reply.meta.channel == ev.CHANNEL_WECOM_APP and reply.meta.correlation_id == "msg-alice-1"
    assert (await call(nc, "list_reminders", {}, who))["reminders"] == []  # a one-off is gone once it fired
    await asyncio.sleep(2)
    assert len(await drafted_for(nc, who.conversation_id)) == 1


async def test_the_same_message_answered_again_replaces_its_reminder_instead_of_doubling_it(nc: Client) -> None:
    who = caller("bob", "msg-bob-1")
    args = {"text": "交报告", "at": local(timedelta(days=2))}
    first = await call(nc, "create_reminder", args, who)
    again = await call(nc, "create_reminder", args, who)  # nlp redelivered the message: the model asked again
    assert first["id"] == again["id"]
    assert len((await call(nc, "list_reminders", {}, who))["reminders"]) == 1


async def test_a_user_cancels_their_own_reminders_and_nobody_elses(nc: Client) -> None:
    carol, dave = caller("carol", "msg-carol-1"), caller("dave", "msg-dave-1")
    mine = await call(nc, "create_reminder", {"text": "买菜", "at": local(timedelta(hours=3))}, carol)
    before = await schedules(nc)
    refused = await call(nc, "cancel_reminder", {"reminder_id": mine["id"]}, dave)
    assert refused["code"] == "500" and f"no reminder with id '{mine['id']}'" in refused["error"]
    assert "nothing was cancelled" in refused["error"]
    assert await schedules(nc) == before  # dave could not touch it
    unknown = await call(nc, "cancel_reminder", {"reminder_id": "zzzz"}, carol)
    assert f"(their reminders: {mine['id']})" in unknown["error"]
    wildcard = await call(nc, "cancel_reminder", {"reminder_id": ">"}, carol)
    assert "no reminder with id '>'" in wildcard["error"] and await schedules(nc) == before
    done = await call(nc, "cancel_reminder", {"reminder_id": mine["id"]}, carol)
    assert done == {"cancelled": True, "id": mine["id"], "text": "买菜"}
    assert (await call(nc, "list_reminders", {}, carol))["reminders"] == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"text": "开会", "at": "2020-01-01T09:00:00"}, "is in the past (it is now 20"),
        ({"text": "开会", "at": "2099-01-01T09:00:00"}, "more than 366 days ahead"),
        ({"text": "开会", "at": "明天上午9点"}, "not an ISO 8601 date and time"),
        ({"text": "开会"}, "`at` is required"),
        ({"text": "喝水", "every": "often"}, "whole number and a unit"),
        ({"text": "喝水", "every": "400d"}, "at most 366 days"),
        ({"text": "   ", "at": "2099-01-01T09:00:00"}, "`text` is empty"),
    ],
)
async def test_bad_times_are_refused_plainly_and_schedule_nothing(nc: Client, args: dict[str, Any], error: str) -> None:
    who = caller("erin", "msg-erin-1")
    before = await schedules(nc)
    result = await call(nc, "create_reminder", args, who)
    assert result["code"] == "500" and error in result["error"]
    assert await schedules(nc) == before


async def test_arguments_outside_the_schema_are_refused_by_the_sdk(nc: Client) -> None:
    result = await call(nc, "create_reminder", {"text": "x", "repeat": "yearly"}, caller("erin"))
    assert result["code"] == "400" and "repeat" in result["error"]


async def test_without_the_caller_headers_nothing_is_scheduled(nc: Client) -> None:
    before = await schedules(nc)
    result = await call(nc, "create_reminder", {"text": "开会", "at": local(timedelta(hours=1))}, None)
    assert "which user is asking" in result["error"]
    assert await schedules(nc) == before


async def test_a_user_has_at_most_the_allowed_number_of_reminders(nc: Client) -> None:
    who = caller("frank", "msg-frank-1")
    for hour in range(MAX_PER_USER):
        created = await call(
            nc, "create_reminder", {"text": f"第{hour}件事", "at": local(timedelta(hours=hour + 1))}, who
        )
        assert created["scheduled"]
    refused = await call(nc, "create_reminder", {"text": "one too many", "at": local(timedelta(hours=9))}, who)
    assert f"already has {MAX_PER_USER} reminders" in refused["error"]
    assert len((await call(nc, "list_reminders", {}, who))["reminders"]) == MAX_PER_USER


async def test_a_repeating_reminder_fires_each_time_until_cancelled(nc: Client) -> None:
    who = caller("grace", "msg-grace-1")
    created = await call(nc, "create_reminder", {"text": "站起来活动", "every": "1s"}, who)
    assert created["repeat"] == "every 1s"
    deadline = time.monotonic() + 15
    while len(await drafted_for(nc, who.conversation_id)) < 3:
        assert time.monotonic() < deadline, "the reminder did not fire three times"
        await asyncio.sleep(0.2)
    await call(nc, "cancel_reminder", {"reminder_id": created["id"]}, who)
    await asyncio.sleep(1.5)  # a firing already on its way may still land
    fired = len(await drafted_for(nc, who.conversation_id))
    await asyncio.sleep(2.5)
    drafted = await drafted_for(nc, who.conversation_id)
    assert len(drafted) == fired  # none after the cancel
    assert len({d.meta.event_id for d in drafted}) == len(drafted)  # each firing its own event


async def test_a_firing_handled_twice_is_one_reply_and_each_firing_of_a_repeat_is_its_own(nc: Client) -> None:
    """What a replica killed before its ack leaves behind: the same firing handled again, by any
    replica. Only distinct firings become distinct replies."""
    who = caller("heidi", "msg-heidi-1")
    created = await call(nc, "create_reminder", {"text": "复查", "at": local(timedelta(days=3))}, who)
    js = nc.jetstream()
    stored = await js.get_last_msg(REMINDERS_STREAM, schedule_subject(owner_key(who), created["id"]))
    tracer = trace.get_tracer("test")
    replica = DueReminders(js, EventPublisher(js, tracer), tracer, ReminderMetrics(CollectorRegistry()), 4)
    firings = ["purge", "purge", "2030-01-01T01:00:00Z", "2030-01-01T01:00:00Z", "2030-01-02T01:00:00Z"]
    for n, following in enumerate(firings):
        delivered = 2 if n in (1, 3) else 1
        reply = f"$JS.ACK.{REMINDERS_STREAM}.probe.{delivered}.{9000 + n}.{n + 1}.{time.time_ns()}.0"
        fired = Msg(nc, due_subject(owner_key(who)), reply, stored.data or b"", {"Nats-Schedule-Next": following})
        await replica.handle(fired)
    assert len(await drafted_for(nc, who.conversation_id)) == 3  # the one-off once, two firings of a repeat


async def test_an_unreadable_firing_is_dead_lettered_not_retried_forever(nc: Client) -> None:
    js = nc.jetstream()
    await js.publish(due_subject("0" * 20), b"not a reminder")
    deadline = time.monotonic() + 10
    while True:
        try:
            dead = await js.get_last_msg("WXBOT_DLQ", "wxbot.dlq.skills-reminders-due")
            break
        except NotFoundError:
            assert time.monotonic() < deadline, "not dead-lettered"
            await asyncio.sleep(0.2)
    assert dead.data == b"not a reminder" and "unreadable reminder" in (dead.headers or {})["Wxbot-Dlq-Reason"]
