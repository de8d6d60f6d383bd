"""Which conversation a message belongs to: the key context remembers history under.

One-to-one chats (self-built app, Official Account, bridge) are one conversation per user. In a
group chat the bot either shares one memory for the whole group (`group`, default: members can
build on each other's questions) or keeps one per member (`member`: nobody sees what another
member asked) — `CONVERSATION_GROUP_SCOPE`.
"""

from __future__ import annotations

from typing import Literal

GroupScope = Literal["group", "member"]


def conversation_id(
    channel: str, receiver: str, user_id: str, chat_id: str = "", group_scope: GroupScope = "group"
) -> str:
    """`channel:receiver:user:<id>` for one-to-one chats; `…:group:<chat>[:member:<id>]` in groups."""
    if not chat_id:
        return f"{channel}:{receiver}:user:{user_id}"
    if group_scope == "member":
        return f"{channel}:{receiver}:group:{chat_id}:member:{user_id}"
    return f"{channel}:{receiver}:group:{chat_id}"
