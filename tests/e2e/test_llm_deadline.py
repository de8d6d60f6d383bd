"""A hung LLM under LLM_ANSWER_DEADLINE_S: the user gets one apology within the deadline (plus
delivery), and nothing after it — not even when the hung call is released and would answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import CONFIG, World, logged, running_world, send_text
from wxbot_common.nats.subjects import EventKind
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_nlp.drafting import APOLOGY
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DEADLINE_S = 3.0
DELIVERY_S = 10.0  # what the issue allows on top of the deadline for the apology to reach the user
QUIET_S = 4.0  # how long no second reply may arrive after the hung call is released


@pytest.fixture(scope="module")
async def dw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {
        "LLM_ANSWER_DEADLINE_S": str(DEADLINE_S),
        "LLM_TIMEOUT_S": "20",  # alone, three attempts of it would keep the user waiting a minute
        "LLM_RETRIES": "2",
        "LLM_BACKOFF_BASE_S": "0.05",
    }
    async with running_world(tmp_path_factory.mktemp("deadline"), env) as world:
        yield world


async def test_a_hung_llm_gets_one_apology_within_the_deadline_and_no_late_answer(dw: World) -> None:
    user = "e2e-deadline-hung"
    dw.llm.hang = True
    try:
        started = time.monotonic()
        await send_text(dw, user, "are you there?")
        got = await dw.wecom.wait_for_messages(user, 1, timeout=DEADLINE_S + DELIVERY_S)
        waited = time.monotonic() - started
        assert [m.content for m in got] == [APOLOGY]
        assert DEADLINE_S - 0.5 <= waited < DEADLINE_S + DELIVERY_S  # the LLM had its time, and no more
        # The one attempt was hung up on (the upstream saw the connection close), none is parked.
        await wait_until(lambda: dw.llm.stats()["abandoned"] == 1, 5, "the hung LLM call to be abandoned")
        assert dw.llm.stats()["calls"] == 1  # no retry started without the time to finish
    finally:
        dw.llm.hang = False  # a call still waiting would now answer: the late reply a wrong drafter sends
    quiet_until = time.monotonic() + QUIET_S
    while time.monotonic() < quiet_until:
        assert [m.content for m in dw.wecom.messages_for(user)] == [APOLOGY], "a second reply arrived"
        await asyncio.sleep(0.1)
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    drafted = [ev.ReplyDrafted.FromString(d) for d in await logged(dw, EventKind.DRAFTED, conversation)]
    assert [(d.text, d.source) for d in drafted] == [(APOLOGY, ev.REPLY_SOURCE_NOTICE)]

    await send_text(dw, user, "back now?")
    got = await dw.wecom.wait_for_messages(user, 2, timeout=30)
    assert got[0].content == APOLOGY and got[1].content.startswith("LLM says: back now?") and len(got) == 2
