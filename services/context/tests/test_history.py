"""Budgeting history: newest turns first, never starting with an assistant turn; CJK-aware estimate."""

from wxbot_common.nats.subjects import EventKind
from wxbot_context.history import fit_budget
from wxbot_context.projection import change_for
from wxbot_context.store import Op, StoredTurn
from wxbot_context.tokens import MESSAGE_OVERHEAD, estimate_tokens
from wxbot_proto.events.v1 import events_pb2 as ev


def _t(role: str, text: str, seq: int) -> StoredTurn:
    return StoredTurn(role, text, seq, 0.0)


def test_chinese_costs_a_token_per_character() -> None:
    assert estimate_tokens("你好世界") == MESSAGE_OVERHEAD + 4
    assert estimate_tokens("abcdefgh") == MESSAGE_OVERHEAD + 2


def test_budget_keeps_newest_turns_in_order() -> None:
    turns = [
        _t("user", "一" * 10, 1),
        _t("assistant", "二" * 10, 1),
        _t("user", "三" * 10, 2),
        _t("assistant", "四" * 10, 2),
    ]
    chosen, total = fit_budget(turns, budget=2 * (10 + MESSAGE_OVERHEAD))
    assert [t.text[0] for t in chosen] == ["三", "四"]
    assert total == 2 * (10 + MESSAGE_OVERHEAD)


def test_history_never_starts_with_assistant_turn() -> None:
    turns = [_t("user", "a" * 400, 1), _t("assistant", "b", 1), _t("user", "c", 2)]
    chosen, _ = fit_budget(turns, budget=20)
    assert [t.role for t in chosen] == ["user"]


def test_projection_meaning_of_events() -> None:
    accepted = ev.InboundAccepted(message=ev.MessageReceived(text="hi"))
    change = change_for(EventKind.ACCEPTED, accepted, 7)
    assert change is not None and change.op is Op.USER and change.turn is not None
    assert change.turn.origin_sequence == 7
    notice = ev.ReplyApproved(text="no llm", source=ev.REPLY_SOURCE_NOTICE)
    resolved = change_for(EventKind.APPROVED, notice, 7)
    assert resolved is not None and resolved.op is Op.RESOLVE
    assert change_for(EventKind.DRAFTED, ev.ReplyDrafted(), 7) is None


def test_an_image_message_leaves_a_user_turn_marked_as_an_image() -> None:
    image = ev.InboundAccepted(message=ev.MessageReceived(kind=ev.MESSAGE_KIND_IMAGE, text="[image]"))
    text = ev.InboundAccepted(message=ev.MessageReceived(kind=ev.MESSAGE_KIND_TEXT, text="what breed is it?"))
    image_change, text_change = change_for(EventKind.ACCEPTED, image, 8), change_for(EventKind.ACCEPTED, text, 9)
    assert image_change is not None and image_change.turn is not None and image_change.turn.image
    assert text_change is not None and text_change.turn is not None and not text_change.turn.image
    stored = image_change.turn.to_json()
    assert StoredTurn.from_json(stored).image
    assert '"i"' not in text_change.turn.to_json()  # text turns are stored as before
    # turns stored before the mark existed read as text turns
    assert not StoredTurn.from_json('{"r": "user", "t": "[image]", "s": 3, "at": 1.0, "k": 5}').image
