"""The safety decisions: evasions of the lexicon, rate notices once per window, masking."""

import pytest

from wxbot_safety.lexicon import Lexicon, normalise
from wxbot_safety.policy import RATE_NOTICE, WORD_NOTICE, check_inbound, check_outbound

LEX = Lexicon(["代开发票", "badword", "冰毒"])


@pytest.mark.parametrize(
    "text",
    [
        "我要代开发票",
        "代 开 发 票",
        "代.开-发_票!",
        "代\u200b开\u200d发票",
        "BADWORD here",
        "ｂａｄｗｏｒｄ",  # full-width
        "b a d w o r d",
        "B-a-D.w*o*r*d",
    ],
)
def test_listed_terms_are_found_through_evasions(text: str) -> None:
    assert LEX.find(text), text


@pytest.mark.parametrize("text", ["发票怎么开？", "good words", "hello", "", "冰 箱"])
def test_clean_text_passes(text: str) -> None:
    assert not LEX.find(text)


def test_normalise_maps_back_to_source_positions() -> None:
    norm, origin = normalise("A ｂ")
    assert norm == "ab"
    assert origin == [0, 2]


def test_mask_replaces_only_the_matched_span() -> None:
    masked, n = LEX.mask("买冰毒吗? no")
    assert n == 1
    assert masked == "买＊＊吗? no"


def test_inbound_rate_limit_notifies_once_per_window() -> None:
    limit = 3
    verdicts = [check_inbound("hi", n, limit, LEX) for n in range(1, 7)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False, False]
    assert [v.notice for v in verdicts[3:]] == [RATE_NOTICE, "", ""]
    assert all(v.reason == "rate_limited" for v in verdicts[3:])


def test_inbound_sensitive_word_is_blocked_with_notice() -> None:
    v = check_inbound("我要代 开发票", 1, 20, LEX)
    assert (v.allowed, v.reason, v.notice) == (False, "sensitive_word", WORD_NOTICE)


def test_zero_limit_means_unlimited() -> None:
    assert check_inbound("hi", 10_000, 0, LEX).allowed


def test_outbound_is_masked_not_dropped() -> None:
    v = check_outbound("You can buy 冰毒 there.", LEX)
    assert v.masked and "冰毒" not in v.text and v.text.startswith("You can buy ")
    assert check_outbound("all fine", LEX) == type(v)("all fine", False)
