"""Driving the console as a browser would, with an HTTP client: the WeCom web login round trip,
the CSRF token of a page, and a dead letter to replay."""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qsl, urlsplit

import httpx
import nats
from opentelemetry import trace

from tests.e2e.harness import CONFIG, World
from wxbot_common.ids import now_timestamp
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import HEADER_EVENT_TYPE, HEADER_MSG_ID, EventKind
from wxbot_proto.events.v1 import events_pb2 as ev

ADMIN = "zhangsan"
NOT_ADMIN = "lisi"
LOCAL_TOKEN = "e2e-local-login-token-0123456789"
CONSOLE_ENV = {"CONSOLE_ADMINS": f"{ADMIN},nobody-else", "CONSOLE_LOCAL_LOGIN_TOKEN": LOCAL_TOKEN}


def console_url(world: World) -> str:
    url = world.stack.console_url
    assert url is not None, "this world runs without the console"
    return url


async def start_login(client: httpx.AsyncClient, world: World) -> str:
    """Follow the console to the fake WeCom's login page; the page's URL (the state cookie is in `client`)."""
    resp = await client.get(f"{console_url(world)}/login/wecom")
    assert resp.status_code == 302, resp.text
    target = resp.headers["location"]
    assert target.startswith(f"{world.wecom.base_url}/wwlogin/sso/login?"), target
    return target


async def confirm_as(client: httpx.AsyncClient, login_page: str, userid: str) -> str:
    """Pick `userid` on the fake's page; the callback URL WeCom sends the browser to (code and state)."""
    fields = dict(parse_qsl(urlsplit(login_page).query))
    fields.pop("lang", None)
    resp = await client.post(
        f"{urlsplit(login_page).scheme}://{urlsplit(login_page).netloc}/wwlogin/sso/confirm",
        data={**fields, "userid": userid},
    )
    assert resp.status_code == 302, resp.text
    return resp.headers["location"]


async def log_in(client: httpx.AsyncClient, world: World, userid: str = ADMIN) -> httpx.Response:
    """The whole round trip; the console's answer to the callback."""
    callback = await confirm_as(client, await start_login(client, world), userid)
    return await client.get(callback)


def csrf_of(page: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def make_dead_letter(world: World, user: str, text: str) -> int:
    """A user's WeCom message as safety's consumer would have dead-lettered it; its DLQ sequence."""
    received = ev.MessageReceived(provider_msg_id=secrets.token_hex(8), kind=ev.MESSAGE_KIND_TEXT, text=text)
    received.meta.event_id = f"e2e-dlq-{secrets.token_hex(12)}"
    received.meta.conversation_id = f"wecom:{CONFIG['corpid']}:user:{user}"
    received.meta.correlation_id = received.meta.event_id
    received.meta.channel = ev.CHANNEL_WECOM_APP
    received.meta.occurred_at.CopyFrom(now_timestamp())
    received.reply_to.corp_id = CONFIG["corpid"]
    received.reply_to.agent_id = CONFIG["agentid"]
    received.reply_to.user_id = user
    nc = await nats.connect(world.stack.nats.url)
    try:
        js = nc.jetstream()
        publisher = EventPublisher(js, trace.get_tracer("e2e"))
        headers = {HEADER_MSG_ID: received.meta.event_id, HEADER_EVENT_TYPE: received.DESCRIPTOR.full_name}
        subject = EventKind.RECEIVED.subject(received.meta.conversation_id)
        await publisher.dead_letter(
            "safety-inbound", subject, received.SerializeToString(), headers, "e2e: gave up", secrets.randbelow(10**9)
        )
        info = await js.stream_info("WXBOT_DLQ")
        return int(info.state.last_seq)
    finally:
        await nc.close()
