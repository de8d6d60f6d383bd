"""The fake WeCom's template cards are as strict as the documented service."""

from __future__ import annotations

import pytest

from wxbot_devkit.fakes.wecom_cards import BAD_RESPONSE_CODE, DUPLICATE_TASK, CardDesk
from wxbot_gateway.feedback import card_for, task_id_of


def test_a_card_is_accepted_once_per_task_and_its_codes_are_single_use() -> None:
    desk = CardDesk()
    task = task_id_of("6f1c4e0a-8a3b-5f7e-9d2c-1b0a9e8f7d6c")
    card = card_for(task)
    assert desk.check("zhangsan", card) == 0
    desk.accept("zhangsan", card)
    assert desk.check("zhangsan", card) == DUPLICATE_TASK  # task ids are unique per app
    code = desk.click("zhangsan", task, f"fb:up:{task}")
    update = {"userids": ["zhangsan"], "agentid": 1, "response_code": code, "button": {"replace_name": "ok"}}
    assert desk.update(update) == 0
    assert desk.update(update) == BAD_RESPONSE_CODE  # spent
    late = desk.click("zhangsan", task, f"fb:down:{task}")
    desk.expire_codes()
    assert desk.update({**update, "response_code": late}) == BAD_RESPONSE_CODE  # older than 72 hours
    with pytest.raises(ValueError):
        desk.click("lisi", task, f"fb:up:{task}")  # not this user's card


def test_of_two_sends_of_one_task_id_checked_at_once_only_the_first_is_recorded() -> None:
    desk = CardDesk()
    card = card_for(task_id_of("0d6a1f52-3c4b-5e6f-8a9b-0c1d2e3f4a5b"))
    assert desk.check("zhangsan", card) == desk.check("lisi", card) == 0  # both pass before either is kept
    assert desk.accept("zhangsan", card) is not None
    assert desk.accept("lisi", card) is None  # the fake answers this send 42014, as WeCom would
    assert desk.cards[str(card["task_id"])].touser == "zhangsan"


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"task_id": ""}, DUPLICATE_TASK),
        ({"task_id": "x" * 129}, DUPLICATE_TASK),
        ({"task_id": "has space"}, DUPLICATE_TASK),
        ({"card_type": "vote_interaction"}, 40008),
        ({"button_list": []}, 47001),
        ({"button_list": [{"text": "a", "key": "k"}, {"text": "b", "key": "k"}]}, 47001),
        ({"main_title": {}}, 47001),
    ],
)
def test_malformed_cards_are_refused(change: dict[str, object], errcode: int) -> None:
    assert CardDesk().check("zhangsan", {**card_for("fb-1"), **change}) == errcode
