"""Helpers of the end-to-end tests: the world they run in and a WeCom-like client."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from wxbot_devkit.fakes.llm import ChatRequest, FakeLLM
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.otlp_sink import OtlpSink
from wxbot_devkit.system import Stack
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.messages import build_inner_text_xml

VECTORS = json.loads((Path(__file__).parent.parent / "fixtures" / "wecom-vectors.json").read_text())
CONFIG = VECTORS["config"]
SECRET = "e2e-secret"
LLM_KEY = "sk-e2e"


def llm_reply(request: ChatRequest) -> str:
    """Deterministic answers that show what the model was given."""
    return f"LLM says: {request.last_user_message} (saw {len(request.messages)} messages)"


@dataclass
class World:
    stack: Stack
    wecom: FakeWeCom
    llm: FakeLLM
    sink: OtlpSink


_MSG_IDS = itertools.count(7_300_000_000_000_000_001)


def _crypto() -> CallbackCrypto:
    return CallbackCrypto(CONFIG["token"], CONFIG["encoding_aes_key"], CONFIG["corpid"])


async def send_text(world: World, user: str, text: str, msg_id: int | None = None) -> tuple[httpx.Response, int]:
    """POST an encrypted text callback the way WeCom does; returns the response and the MsgId."""
    msg_id = msg_id or next(_MSG_IDS)
    inner = build_inner_text_xml(
        to_user=CONFIG["corpid"],
        from_user=user,
        create_time=int(time.time()),
        content=text,
        msg_id=str(msg_id),
        agent_id=CONFIG["agentid"],
    )
    params, body = _crypto().build_callback(
        inner,
        timestamp=str(int(time.time())),
        nonce=str(msg_id % 1_000_000),
        to_user_name=CONFIG["corpid"],
        agent_id=CONFIG["agentid"],
    )
    async with httpx.AsyncClient(base_url=world.stack.gateway_url, timeout=10) as client:
        resp = await client.post(
            "/wecom/callback", params=params, content=body.encode(), headers={"Content-Type": "text/xml"}
        )
    return resp, msg_id
