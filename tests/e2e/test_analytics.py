"""Analytics from outside: a scripted session through the real pipeline, then the report.

What was sent is known from the log itself (the drafted replies' variants and tokens, the
replies delivered); the report must say the same, after a rebuild from the log too, and after
the durable consumer replays the whole log again (redelivery must not double count).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
import websockets

from tests.e2e.harness import CONFIG, World, _crypto, logged_on, running_world, send_text
from wxbot_common.ids import derived_event_id, inbound_event_id, now_timestamp
from wxbot_common.nats.subjects import EVENTS_STREAM, HEADER_MSG_ID, EventKind
from wxbot_common.nats.topology import ANALYTICS_PROJECTION
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

VARIANTS = json.dumps([{"name": "A", "weight": 1}, {"name": "B", "weight": 1}])
USERS = [f"analytics-user-{i}" for i in range(6)]
LLM_LATENCY_S = 0.3
BRIDGE_TOKEN = "analytics-bridge-token"


@pytest.fixture(scope="module")
async def aw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {
        "NLP_VARIANTS": VARIANTS,
        "NLP_CACHE_TTL_S": "0",
        "ANALYTICS_STORE_TEXT": "true",
        "ANALYTICS_BATCH_LINGER_S": "0.02",
        "ANALYTICS_MIN_FEEDBACK": "2",
        "ANALYTICS_PRICES": json.dumps({"fake-model": {"input": 1.0, "output": 4.0}}),
        "FEEDBACK": "always",
        "GATEWAY_BRIDGE_TOKEN": BRIDGE_TOKEN,
    }
    async with running_world(tmp_path_factory.mktemp("analytics"), env) as world:
        world.llm.latency_s = LLM_LATENCY_S
        yield world


def api(world: World) -> str:
    return world.stack.service_urls()["analytics"][0]


async def all_logged(world: World, kind: EventKind) -> list[Any]:
    """Every event of one kind in the log (decoded), oldest first."""
    return [kind.decode(data) for data in await logged_on(world, kind.wildcard)]


async def report(world: World, **params: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        resp = await client.get(f"{api(world)}/v1/report", params={"since": "1h", **params})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def report_when(world: World, messages: int, replies: int, timeout_s: float = 30) -> dict[str, Any]:
    """The report once the projection has caught up with `messages` and `replies`."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = await report(world)
        if (r["messages"], r["replies"]) == (messages, replies) or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.2)


async def publish_feedback(world: World, approved: ev.ReplyApproved, positive: bool, copies: int) -> None:
    """A 👍/👎 as the gateway records it, `copies` times under distinct message ids (a retried callback
    that reached the log more than once): the event id is the same, so analytics counts it once."""
    event = ev.FeedbackGiven(
        reply_to=approved.reply_to,
        reply_event_id=approved.meta.event_id,
        rating=ev.FEEDBACK_RATING_POSITIVE if positive else ev.FEEDBACK_RATING_NEGATIVE,
        kind=ev.FEEDBACK_KIND_EXPLICIT,
        task_id=f"task-{approved.meta.event_id[:8]}",
        key="up" if positive else "down",
    )
    event.meta.event_id = derived_event_id("feedback", approved.meta.event_id, approved.reply_to.user_id)
    event.meta.conversation_id = approved.meta.conversation_id
    event.meta.correlation_id = approved.meta.correlation_id
    event.meta.causation_id = approved.meta.event_id
    event.meta.channel = approved.meta.channel
    event.meta.occurred_at.CopyFrom(now_timestamp())
    nc = await nats.connect(world.stack.nats.url)
    try:
        js = nc.jetstream()
        for i in range(copies):
            await js.publish(
                EventKind.FEEDBACK.subject(event.meta.conversation_id),
                event.SerializeToString(),
                headers={HEADER_MSG_ID: f"{event.meta.event_id}:{i}"},
            )
    finally:
        await nc.drain()


def expected_variants(drafted: list[ev.ReplyDrafted]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for d in drafted:
        if d.source != ev.REPLY_SOURCE_LLM:
            continue
        v = out.setdefault(d.variant, {"answers": 0, "tokens_in": 0, "tokens_out": 0})
        v["answers"] += 1
        v["tokens_in"] += d.prompt_tokens
        v["tokens_out"] += d.completion_tokens
    return out


def assert_matches(
    r: dict[str, Any], drafted: list[ev.ReplyDrafted], sent: int, feedback: dict[str, tuple[int, int]]
) -> None:
    assert r["replies"] == sent
    assert r["tokens_in"] == sum(d.prompt_tokens for d in drafted)
    assert r["tokens_out"] == sum(d.completion_tokens for d in drafted)
    assert r["active_users"] == len(USERS)
    want = expected_variants(drafted)
    got = {v["name"]: v for v in r["variants"]}
    assert set(got) == set(want)
    for name, figures in want.items():
        assert {k: got[name][k] for k in figures} == figures, name
        pos, neg = feedback.get(name, (0, 0))
        assert (got[name]["feedback_positive"], got[name]["feedback_negative"]) == (pos, neg), name
    answer = r["latency_ms"]["answer"]
    assert answer["count"] == len(drafted)
    assert LLM_LATENCY_S * 1000 <= answer["p50_ms"] < LLM_LATENCY_S * 1000 + 1500
    assert r["latency_ms"]["end_to_end"]["p50_ms"] >= answer["p50_ms"]
    assert r["models"][0]["model"] == "fake-model"
    assert r["models"][0]["cost"] == pytest.approx((r["tokens_in"] * 1.0 + r["tokens_out"] * 4.0) / 1e6)


async def run_cli(world: World, *args: str) -> tuple[int, str, str]:
    env = {**world.stack.env, "NATS_URL": world.stack.nats.url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wxbot_analytics",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_report_matches_a_scripted_session_after_rebuild_and_replay(aw: World) -> None:
    for round_ in range(2):
        for user in USERS:
            resp, _ = await send_text(aw, user, f"question {round_} from {user}")
            assert resp.status_code == 200
        for user in USERS:
            await aw.wecom.wait_for_messages(user, round_ + 1, timeout=30)
    # One user says the last answer was wrong: implicit negative feedback on it.
    await send_text(aw, USERS[0], "不对")
    await aw.wecom.wait_for_messages(USERS[0], 3, timeout=30)

    drafted: list[ev.ReplyDrafted] = await all_logged(aw, EventKind.DRAFTED)
    approved: list[ev.ReplyApproved] = await all_logged(aw, EventKind.APPROVED)
    sent = len(await all_logged(aw, EventKind.SENT))
    variant_of = {d.meta.correlation_id: d.variant for d in drafted}
    assert len(drafted) == 13 and sent == 13 and set(variant_of.values()) == {"A", "B"}

    # 👍 on two answers of other users, 👎 on one, each recorded three times.
    by_user = {a.reply_to.user_id: a for a in approved}
    votes = [(USERS[1], True), (USERS[2], True), (USERS[3], False)]
    feedback: dict[str, list[int]] = {}
    for user, positive in votes:
        await publish_feedback(aw, by_user[user], positive, copies=3)
        counts = feedback.setdefault(variant_of[by_user[user].meta.correlation_id], [0, 0])
        counts[0 if positive else 1] += 1
    # the "不对" goes against the answer before it (USERS[0]'s second answer)
    wrong_of = next(d for d in drafted if d.reply_to.user_id == USERS[0] and "question 1" in d.text)
    feedback.setdefault(wrong_of.variant, [0, 0])[1] += 1
    expected_feedback = {k: (v[0], v[1]) for k, v in feedback.items()}

    r = await report_when(aw, messages=13, replies=13)
    assert r["messages"] == 13
    assert_matches(r, drafted, sent, expected_feedback)
    assert {"question": "不对", "asked": 1} in r["questions"]
    assert r["feedback"] == {"explicit": 3, "implicit_negative": 1}

    # The CLI says the same, as one JSON object.
    code, out, err = await run_cli(aw, "report", "--since", "1h", "--json", "--url", api(aw))
    assert code == 0, err
    cli = json.loads(out)
    assert (cli["messages"], cli["replies"], cli["tokens_in"], cli["tokens_out"]) == (
        13,
        13,
        r["tokens_in"],
        r["tokens_out"],
    )
    assert [(v["name"], v["answers"], v["feedback_positive"], v["feedback_negative"]) for v in cli["variants"]] == [
        (v["name"], v["answers"], v["feedback_positive"], v["feedback_negative"]) for v in r["variants"]
    ]

    # Rebuild from the log with the service stopped (the embedded store is one process's).
    (analytics,) = [rep for rep in aw.stack.replicas if rep.service == "analytics"]
    await analytics.child.stop()
    env = analytics.child.env
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wxbot_analytics",
        "rebuild",
        env=env,
        cwd=analytics.child.cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out_b, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out_b.decode()
    assert "stored" in out_b.decode()

    # And make the durable deliver the whole log again on start: every row arrives a second time.
    nc = await nats.connect(aw.stack.nats.url)
    try:
        js = nc.jetstream()
        await js.delete_consumer(EVENTS_STREAM, ANALYTICS_PROJECTION.durable)
        await js.add_consumer(EVENTS_STREAM, ANALYTICS_PROJECTION.config())
    finally:
        await nc.drain()
    await analytics.start()
    nc = await nats.connect(aw.stack.nats.url)
    try:
        in_log = int((await nc.jetstream().stream_info(EVENTS_STREAM)).state.messages)
    finally:
        await nc.drain()
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=10) as client:
        while True:  # every event of the log stored once more by the restarted service
            status = (await client.get(f"{api(aw)}/v1/status")).json()
            if status["inserted_since_start"] >= in_log and status["lag_events"] == 0:
                break
            assert time.monotonic() < deadline, f"the replayed log was not projected in 30 s: {status}"
            await asyncio.sleep(0.2)
    again = await report(aw)
    assert again["messages"] == 13
    assert_matches(again, drafted, sent, expected_feedback)
    assert again["variants"] == r["variants"] and again["latency_ms"] == r["latency_ms"]


@pytest.mark.parametrize(
    "query",
    [
        "since=1%27%3B%20DROP%20TABLE%20wxbot.events%3B%20--",
        "since=7d&group_by=user",
        "since=99999999d",
        "since=1h&until=2h",
        "since=100000d",
        "bucket=minute",
        "limit=1%20OR%201%3D1",
        "since=7d&since=1d",
    ],
)
async def test_bad_report_queries_are_400_and_change_nothing(aw: World, query: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        before = (await client.get(f"{api(aw)}/v1/status")).json()["rows"]
        resp = await client.get(f"{api(aw)}/v1/report?{query}")
        assert resp.status_code == 400
        assert resp.json()["error"]
        assert (await client.get(f"{api(aw)}/v1/status")).json()["rows"] == before


async def test_cli_refuses_a_bad_range_with_a_clear_message(aw: World) -> None:
    code, out, err = await run_cli(aw, "report", "--since", "2h", "--until", "3h", "--url", api(aw))
    assert code == 2 and out == ""
    assert "since must be before until" in err


async def test_lag_is_exported_as_a_metric(aw: World) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{api(aw)}/metrics")).text
    assert "wxbot_analytics_lag_events" in text
    assert 'wxbot_consumer_pending{durable="analytics-projection"}' in text


async def post_click(world: World, user: str, task_id: str, key: str, code: str, signature: str | None = None) -> int:
    """A template_card_event callback as WeCom sends it when `user` presses a button (no MsgId)."""
    inner = (
        f"<xml><ToUserName><![CDATA[{CONFIG['corpid']}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[{key}]]></EventKey>"
        f"<TaskId><![CDATA[{task_id}]]></TaskId><CardType><![CDATA[button_interaction]]></CardType>"
        f"<ResponseCode><![CDATA[{code}]]></ResponseCode><AgentID>{CONFIG['agentid']}</AgentID></xml>"
    )
    params, body = _crypto().build_callback(inner, str(int(time.time())), "4242", CONFIG["corpid"], CONFIG["agentid"])
    if signature is not None:
        params["msg_signature"] = signature
    async with httpx.AsyncClient(base_url=world.stack.gateway_url, timeout=10) as client:
        resp = await client.post("/wecom/callback", params=params, content=body.encode())
    return resp.status_code


async def test_a_thumbs_up_click_counts_once_however_often_wecom_retries_it(aw: World) -> None:
    user = "analytics-clicker"
    await send_text(aw, user, "is this helpful?")
    await aw.wecom.wait_for_messages(user, 1, timeout=30)
    deadline = time.monotonic() + 10
    while not (cards := [c for c in aw.wecom.cards.cards.values() if c.touser == user]):
        assert time.monotonic() < deadline, "no feedback card was sent under the answer"
        await asyncio.sleep(0.1)
    (card,) = cards
    (variant,) = [d.variant for d in await all_logged(aw, EventKind.DRAFTED) if d.reply_to.user_id == user]
    before = {v["name"]: v for v in (await report(aw))["variants"]}[variant]

    up = f"fb:up:{card.task_id}"
    code = aw.wecom.cards.click(user, card.task_id, up)
    for _ in range(3):  # WeCom retries a callback it got no timely answer for: same content each time
        assert await post_click(aw, user, card.task_id, up, code) == 200
    again = aw.wecom.cards.click(user, card.task_id, up)  # the user presses the same button once more
    assert await post_click(aw, user, card.task_id, up, again) == 200
    # Forged (bad signature), for an unknown task, by another user: refused or ignored, nothing recorded.
    assert await post_click(aw, user, card.task_id, up, code, signature="0" * 40) == 403
    assert await post_click(aw, user, "fb-unknown", "fb:up:fb-unknown", code) == 200
    assert await post_click(aw, "someone-else", card.task_id, up, code) == 200

    deadline = time.monotonic() + 20
    while True:
        now = {v["name"]: v for v in (await report(aw))["variants"]}[variant]
        if now["feedback_positive"] > before["feedback_positive"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    feedback = await all_logged(aw, EventKind.FEEDBACK)
    assert len([f for f in feedback if f.task_id == card.task_id]) == 1  # one event in the log
    assert now["feedback_positive"] == before["feedback_positive"] + 1  # and once in the report
    assert now["feedback_negative"] == before["feedback_negative"]
    assert [u["replace_name"] for u in aw.wecom.cards.updates if u["task_id"] == card.task_id] == ["已反馈 👍"]
    assert card.replaced_with == "已反馈 👍"


async def bridge_frames(world: World, *frames: dict[str, str], wait_reply: bool = False) -> list[dict[str, Any]]:
    """Send frames on one socket; the frame answering each (and, with `wait_reply`, the bot's reply too)."""
    url = world.stack.gateway_url.replace("http://", "ws://") + "/ws/bridge"
    headers = {"Authorization": f"Bearer {BRIDGE_TOKEN}"}
    got: list[dict[str, Any]] = []
    async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
        for frame in frames:
            await ws.send(json.dumps(frame))
            async with asyncio.timeout(20):
                got.append(json.loads(await ws.recv()))
                if wait_reply:
                    got.append(json.loads(await ws.recv()))
    return got


async def test_a_bridge_feedback_frame_rates_the_answer_once_and_unknown_messages_are_refused(aw: World) -> None:
    user = "bridge-rater"
    ack, reply = await bridge_frames(
        aw, {"sender": user, "content": "rate this answer", "msg_id": "m-1"}, wait_reply=True
    )
    assert (ack["type"], reply["type"]) == ("ack", "reply")
    (variant,) = [d.variant for d in await all_logged(aw, EventKind.DRAFTED) if d.reply_to.user_id == user]
    before = {v["name"]: v for v in (await report(aw))["variants"]}[variant]
    down = {"sender": user, "msg_type": "feedback", "msg_id": "m-1", "rating": "down"}
    deadline = time.monotonic() + 10
    while (answer := (await bridge_frames(aw, down))[0])["type"] == "error":  # remembered just after delivery
        assert "no answer to rate" in answer["error"] and time.monotonic() < deadline, answer
        await asyncio.sleep(0.1)
    assert answer == {"type": "ack", "msg_id": "m-1", "feedback": "recorded"}
    again, unknown, foreign, bad = await bridge_frames(
        aw,
        down,
        down | {"msg_id": "m-never-sent"},
        down | {"sender": "someone-else"},
        down | {"rating": "meh"},
    )
    assert again == {"type": "ack", "msg_id": "m-1", "feedback": "duplicate"}
    assert unknown["type"] == foreign["type"] == bad["type"] == "error"
    assert "no answer to rate" in unknown["error"] and "no answer to rate" in foreign["error"]
    assert "'rating' must be 'up' or 'down'" in bad["error"]

    correlation = inbound_event_id("bridge", user, "m-1")
    deadline = time.monotonic() + 20
    while (now := {v["name"]: v for v in (await report(aw))["variants"]}[variant])["feedback_negative"] == before[
        "feedback_negative"
    ]:
        assert time.monotonic() < deadline, "the bridge's rating never reached the report"
        await asyncio.sleep(0.2)
    assert now["feedback_negative"] == before["feedback_negative"] + 1
    assert now["feedback_positive"] == before["feedback_positive"]
    logged = [f for f in await all_logged(aw, EventKind.FEEDBACK) if f.meta.correlation_id == correlation]
    assert len(logged) == 1 and logged[0].rating == ev.FEEDBACK_RATING_NEGATIVE
