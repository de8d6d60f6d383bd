"""The console over HTTP against a real stack and the fake WeCom web login: who gets in, what is
refused, and what the operations change (the browser itself is in test_console_browser.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import httpx
import pytest

from tests.e2e.console_helpers import (
    ADMIN,
    LOCAL_TOKEN,
    NOT_ADMIN,
    confirm_as,
    console_url,
    csrf_of,
    log_in,
    make_dead_letter,
    start_login,
)
from tests.e2e.harness import CONFIG, World, logged, send_text
from wxbot_common.nats.subjects import EventKind
from wxbot_devkit.fakes.media_files import png_bytes
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


@asynccontextmanager
async def admin_client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """A client logged in as the admin."""
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await log_in(client, world)
        assert resp.status_code == 303 and resp.headers["location"] == "/", resp.text
        yield client


async def test_admin_logs_in_through_wecom_and_lands_on_the_dashboard(
    console_world: World, client: httpx.AsyncClient
) -> None:
    page = await start_login(client, console_world)
    assert (
        "login_type=CorpApp" in page and f"appid={CONFIG['corpid']}" in page and f"agentid={CONFIG['agentid']}" in page
    )
    resp = await client.get(await confirm_as(client, page, ADMIN))
    assert resp.status_code == 303 and resp.headers["location"] == "/"
    cookie = resp.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookie if c.startswith("wxbot_console="))
    assert "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie
    dashboard = await client.get(f"{console_url(console_world)}/")
    assert dashboard.status_code == 200
    assert "仪表盘" in dashboard.text and f'<span id="user">{ADMIN}</span>' in dashboard.text
    assert "content-security-policy" in dashboard.headers


async def test_a_member_who_is_not_an_admin_is_refused(console_world: World, client: httpx.AsyncClient) -> None:
    resp = await log_in(client, console_world, NOT_ADMIN)
    assert resp.status_code == 403
    assert "CONSOLE_ADMINS" in resp.text
    assert not any(c.startswith("wxbot_console=") for c in resp.headers.get_list("set-cookie"))
    assert (await client.get(f"{console_url(console_world)}/")).headers["location"] == "/login"


async def test_someone_outside_the_corp_is_refused(console_world: World, client: httpx.AsyncClient) -> None:
    # WeCom answers a non-member's code with an openid and no userid: no session, whoever they are
    resp = await log_in(client, console_world, "wx-guest")
    assert resp.status_code == 403
    assert "not a member" in resp.text
    assert not any(c.startswith("wxbot_console=") for c in resp.headers.get_list("set-cookie"))
    assert (await client.get(f"{console_url(console_world)}/")).headers["location"] == "/login"


async def test_forged_and_replayed_state_and_used_or_expired_codes_are_refused(console_world: World) -> None:
    url = console_url(console_world)
    async with httpx.AsyncClient(timeout=10) as client:
        callback = await confirm_as(client, await start_login(client, console_world), ADMIN)
        code = dict(httpx.URL(callback).params)["code"]
        forged = await client.get(f"{url}/login/callback", params={"code": code, "state": "forged"})
        assert forged.status_code == 400 and "state" in forged.text
        assert (await client.get(callback)).status_code == 303  # the real one still works, once
        replayed = await client.get(callback)
        assert replayed.status_code == 400 and "state" in replayed.text
        # A fresh state with the spent code: WeCom says 40029.
        await start_login(client, console_world)
        state = dict(httpx.URL(await confirm_as(client, await start_login(client, console_world), ADMIN)).params)[
            "state"
        ]
        used = await client.get(f"{url}/login/callback", params={"code": code, "state": state})
        assert used.status_code == 403 and "invalid, used or expired" in used.text
    async with httpx.AsyncClient(timeout=10) as client:
        callback = await confirm_as(client, await start_login(client, console_world), ADMIN)
        console_world.wecom.web_login.expire_codes()  # five minutes later
        expired = await client.get(callback)
        assert expired.status_code == 403 and "invalid, used or expired" in expired.text
    async with httpx.AsyncClient(timeout=10) as client:  # a state from another browser (no state cookie)
        callback = await confirm_as(httpx.AsyncClient(timeout=10), await start_login(client, console_world), ADMIN)
        client.cookies.clear()
        assert (await client.get(callback)).status_code == 400


async def test_the_fake_login_page_is_as_strict_as_wecom(console_world: World, client: httpx.AsyncClient) -> None:
    page = await start_login(client, console_world)
    for wrong in (
        "login_type=ServiceApp",
        "appid=wwother",
        f"agentid={int(CONFIG['agentid']) + 1}",
        "redirect_uri=relative",
    ):
        name = wrong.split("=")[0]
        bad = httpx.URL(page).copy_set_param(name, wrong.split("=", 1)[1])
        assert (await client.get(str(bad))).status_code == 400, wrong


async def test_local_login_link_works_once(console_world: World) -> None:
    url = f"{console_url(console_world)}/login/local"
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(url, params={"token": "wrong"})).status_code == 403
        first = await client.get(url, params={"token": LOCAL_TOKEN})
        assert first.status_code == 303
        assert (await client.get(f"{console_url(console_world)}/playground")).status_code == 200
    async with httpx.AsyncClient(timeout=10) as client:
        again = await client.get(url, params={"token": LOCAL_TOKEN, "lang": "en"})
        assert again.status_code == 403 and "already used" in again.text


async def test_without_a_session_or_csrf_token_nothing_changes(console_world: World, client: httpx.AsyncClient) -> None:
    url = console_url(console_world)
    assert (await client.get(f"{url}/api/dashboard")).status_code == 401
    assert (await client.get(f"{url}/operations")).headers["location"] == "/login"
    target = f"wecom:{CONFIG['corpid']}:user:csrf-victim"
    assert (await client.post(f"{url}/operations/reset", data={"conversation_id": target})).status_code == 401
    async with admin_client(console_world) as admin:
        refused = await admin.post(f"{url}/operations/reset", data={"conversation_id": target, "csrf": "guess"})
        assert refused.status_code == 403 and "CSRF" in refused.text
        forged = await admin.post(f"{url}/logout")
        assert forged.status_code == 403
        assert (await admin.get(f"{url}/")).status_code == 200  # still logged in
    assert await logged(console_world, EventKind.RESET, target) == []


async def test_logout_ends_the_session_on_the_server(console_world: World) -> None:
    url = console_url(console_world)
    async with admin_client(console_world) as admin:
        cookie = admin.cookies.get("wxbot_console")
        assert cookie
        resp = await admin.post(f"{url}/logout", data={"csrf": csrf_of((await admin.get(f"{url}/")).text)})
        assert resp.status_code == 303 and resp.headers["location"] == "/login"
    async with httpx.AsyncClient(timeout=10, cookies={"wxbot_console": cookie}) as replayed:
        assert (await replayed.get(f"{url}/")).headers["location"] == "/login"  # the old cookie is worth nothing


async def test_oversized_bodies_are_refused(console_world: World) -> None:
    url = console_url(console_world)
    async with admin_client(console_world) as admin:
        csrf = csrf_of((await admin.get(f"{url}/operations")).text)
        big = "词\n" * 200_000
        resp = await admin.post(f"{url}/operations/files/lexicon/0", data={"csrf": csrf, "content": big})
        assert resp.status_code == 413
        assert "违禁词甲" in (await admin.get(f"{url}/operations/files/lexicon/0")).text


async def test_playground_chats_through_the_pipeline_and_reset_works(console_world: World) -> None:
    url = console_url(console_world)
    async with admin_client(console_world) as admin:
        cookies = {k: v for k, v in admin.cookies.items()}
    socket_url = f"{url.replace('http', 'ws')}/playground/ws"
    async with (
        aiohttp.ClientSession(cookies=cookies) as session,
        session.ws_connect(socket_url, headers={"Origin": url}) as ws,
    ):
        await ws.send_json({"content": "hello console", "msg_id": "pg-1"})
        reply = await _next_reply(ws)
        assert reply == "LLM says: hello console (saw 2 messages)"
        await ws.send_json({"content": "/reset", "msg_id": "pg-2"})
        assert "I have forgotten our conversation" in await _next_reply(ws)
        await ws.send_json({"content": "<script>alert(1)</script>", "msg_id": "pg-3"})
        assert await _next_reply(ws) == "LLM says: <script>alert(1)</script> (saw 2 messages)"
        await ws.send_json({"content": ""})
        assert (await _next_frame(ws, "error"))["error"] == "the message is empty"
        picture = base64.b64encode(png_bytes(24, 24, (200, 30, 30))).decode()
        await ws.send_json({"content": "what colour is this?", "image_base64": picture, "msg_id": "pg-4"})
        assert (await _next_reply(ws)).startswith("LLM says: what colour is this?")
        assert model_saw_image(console_world, "what colour is this?")
        await ws.send_json({"content": "huge", "image_base64": base64.b64encode(b"x" * 60_000).decode()})
        assert "at most 46080 fit in one message" in (await _next_frame(ws, "error"))["error"]
        await ws.send_json({"content": "bad", "image_base64": "%%%"})
        assert (await _next_frame(ws, "error"))["error"] == "the image is not valid base64"
        await ws.send_json({"content": "长" * 3000})
        assert "longer than 8192 bytes" in (await _next_frame(ws, "error"))["error"]
        await ws.send_str("x" * 300_000)  # over CONSOLE_MAX_UPLOAD_BYTES: the socket is closed
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert ws.close_code == 1009
    conversation = f"bridge:ws:user:console-{ADMIN}"
    assert len(await logged(console_world, EventKind.RESET, conversation)) == 1


async def test_playground_socket_needs_a_session_and_this_origin(console_world: World) -> None:
    url = console_url(console_world)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_session:
            await session.ws_connect(f"{url.replace('http', 'ws')}/playground/ws", headers={"Origin": url})
        assert no_session.value.status == 403
    async with admin_client(console_world) as admin:
        cookies = {k: v for k, v in admin.cookies.items()}
    async with aiohttp.ClientSession(cookies=cookies) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as other_site:
            await session.ws_connect(
                f"{url.replace('http', 'ws')}/playground/ws", headers={"Origin": "https://evil.example"}
            )
        assert other_site.value.status == 403


async def test_replaying_a_dead_letter_answers_it_and_records_who(console_world: World) -> None:
    url = console_url(console_world)
    user = "dlq-replay-user"
    seq = await make_dead_letter(console_world, user, "please answer me")
    async with admin_client(console_world) as admin:
        page = (await admin.get(f"{url}/operations")).text
        assert f'id="dl-{seq}"' in page and "e2e: gave up" in page
        resp = await admin.post(f"{url}/operations/dead-letters/{seq}/replay", data={"csrf": csrf_of(page)})
        assert resp.status_code == 303
        sent = await console_world.wecom.wait_for_messages(user, timeout=30)
        assert sent[0].content == "LLM says: please answer me (saw 2 messages)"
        after = (await admin.get(f"{url}/operations")).text
        assert f'id="dl-{seq}"' not in after
        again = await admin.post(f"{url}/operations/dead-letters/{seq}/replay", data={"csrf": csrf_of(after)})
        assert again.status_code == 404
        other = await make_dead_letter(console_world, "dlq-discard-user", "drop me")
        assert (
            await admin.post(f"{url}/operations/dead-letters/{other}/discard", data={"csrf": csrf_of(after)})
        ).status_code == 303
    actions = await _operator_actions(console_world)
    assert {(a.operator, a.action, a.target) for a in actions} >= {
        (ADMIN, "dead_letter.replay", str(seq)),
        (ADMIN, "dead_letter.discard", str(other)),
    }


async def test_reset_a_users_conversation(console_world: World) -> None:
    url = console_url(console_world)
    target = f"wecom:{CONFIG['corpid']}:user:reset-me"
    async with admin_client(console_world) as admin:
        csrf = csrf_of((await admin.get(f"{url}/operations")).text)
        bad = await admin.post(f"{url}/operations/reset", data={"conversation_id": "no-colon", "csrf": csrf})
        assert bad.status_code == 400
        done = await admin.post(f"{url}/operations/reset", data={"conversation_id": target, "csrf": csrf})
        assert done.status_code == 303
        config = (await admin.get(f"{url}/config")).text
        assert "WECOM_SECRET" in config and "e2e-secret" not in config and "(set, hidden)" in config
    assert len(await logged(console_world, EventKind.RESET, target)) == 1
    actions = await _operator_actions(console_world)
    assert (ADMIN, "conversation.reset", target) in {(a.operator, a.action, a.target) for a in actions}


async def test_edited_lexicon_and_knowledge_base_are_validated_and_applied(console_world: World) -> None:
    url = console_url(console_world)
    async with admin_client(console_world) as admin:
        csrf = csrf_of((await admin.get(f"{url}/operations")).text)
        kb_url, lexicon_url = f"{url}/operations/files/kb/0", f"{url}/operations/files/lexicon/0"
        bad = await admin.post(kb_url, data={"csrf": csrf, "content": "- q: only a question\n"})
        assert bad.status_code == 400 and "needs both" in bad.text
        assert "营业时间" in (await admin.get(kb_url)).text  # unchanged
        faq = "- q: 控制台在哪里\n  a: 控制台的地址是 make run 打印的 Console 一行。\n"
        assert (await admin.post(kb_url, data={"csrf": csrf, "content": faq})).status_code == 303
        lexicon = "违禁词甲\n新禁词乙\n"
        assert (await admin.post(lexicon_url, data={"csrf": csrf, "content": lexicon})).status_code == 303
    # Each service's own hot reload picks its file up: the new term is blocked, the new FAQ answers.
    await _until_answer(console_world, "lexicon-user", "这里有新禁词乙", "不允许")
    await _until_answer(console_world, "kb-user", "控制台在哪里", "make run 打印的 Console")


async def _until_answer(world: World, user: str, text: str, expected: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        before = len(world.wecom.messages_for(user))
        await send_text(world, user, text)
        sent = await world.wecom.wait_for_messages(user, before + 1, timeout=15)
        if expected in sent[-1].content:
            return
        assert time.monotonic() < deadline, f"not applied: {sent[-1].content}"


def model_saw_image(world: World, caption: str) -> bool:
    """The model was asked `caption` with an image (an image_url part) beside it."""
    return any(r.image_urls and caption in r.last_user_message for r in world.llm.requests)


async def _operator_actions(world: World) -> list[ev.OperatorAction]:
    import nats

    nc = await nats.connect(world.stack.nats.url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(EventKind.OPERATOR_ACTION.wildcard, ordered_consumer=True)
        out: list[ev.OperatorAction] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except Exception:
                return out
            out.append(ev.OperatorAction.FromString(msg.data))
    finally:
        await nc.close()


async def _next_frame(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, str]:
    async with asyncio.timeout(30):
        while True:
            frame = json.loads((await ws.receive()).data)
            if frame["type"] == kind:
                return frame  # type: ignore[no-any-return]


async def _next_reply(ws: aiohttp.ClientWebSocketResponse) -> str:
    return (await _next_frame(ws, "reply"))["content"]
