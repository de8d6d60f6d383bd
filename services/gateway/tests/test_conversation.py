"""Conversation keys decide who shares memory: a wrong one mixes users' contexts."""

from __future__ import annotations

import pytest

from wxbot_gateway.conversation import conversation_id
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_gateway.text_split import split_utf8


def test_one_to_one_chats_are_one_conversation_per_user() -> None:
    assert conversation_id("wecom", "ww1:1000002", "alice") == "wecom:ww1:1000002:user:alice"
    assert wecom_conversation_id("ww1", "1000002", "alice") != wecom_conversation_id("ww1", "1000002", "bob")
    assert wecom_conversation_id("ww1", "1000002", "alice") != wecom_conversation_id("ww1", "1000003", "alice")


def test_group_chats_share_memory_by_default_or_split_it_per_member() -> None:
    alice = conversation_id("aibot", "bot1", "alice", chat_id="chat9")
    bob = conversation_id("aibot", "bot1", "bob", chat_id="chat9")
    assert alice == bob == "aibot:bot1:group:chat9"
    alice_m = conversation_id("aibot", "bot1", "alice", chat_id="chat9", group_scope="member")
    bob_m = conversation_id("aibot", "bot1", "bob", chat_id="chat9", group_scope="member")
    assert alice_m != bob_m
    assert alice_m != conversation_id("aibot", "bot1", "alice")  # a group is not the private chat


@pytest.mark.parametrize(
    "text",
    ["", "short", "中" * 5000, ("段落。" * 300 + "\n\n") * 5, "a" * 2048, "a" * 2049, "😀" * 1000],
)
def test_split_parts_fit_the_limit_and_join_back(text: str) -> None:
    parts = split_utf8(text)
    assert "".join(parts) == text
    assert all(len(p.encode()) <= 2048 for p in parts)
    assert all(p for p in parts) or text == ""
