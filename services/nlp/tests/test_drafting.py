"""Commands and prompt assembly."""

import pytest

from wxbot_nlp.drafting import Command, HistoryTurn, build_messages, command_of


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("/reset", Command.RESET),
        (" 清除记忆 ", Command.RESET),
        ("/HELP", Command.HELP),
        ("帮助", Command.HELP),
        ("reset my password", None),
        ("/resetx", None),
    ],
)
def test_commands(text: str, command: Command | None) -> None:
    assert command_of(text) is command


def test_messages_are_system_history_then_user() -> None:
    msgs = build_messages("sys", [HistoryTurn("user", "q1"), HistoryTurn("assistant", "a1")], "q2")
    assert msgs == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
