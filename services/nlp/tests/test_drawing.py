"""The drawing detector: precise, so that questions and words with 画 never cost an image."""

from __future__ import annotations

import pytest

from wxbot_nlp.drawing import MAX_PROMPT_CHARS, DrawRequest, drawing_request


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("画一只猫", "一只猫"),
        ("帮我画个太阳", "个太阳"),
        ("请画一幅山水画。", "一幅山水画"),
        ("画一下长城", "长城"),
        ("画出一条龙", "一条龙"),
        ("生成一张猫的图片", "生成一张猫的图片"),
        ("/draw a cat in a hat", "a cat in a hat"),
        ("/DRAW  two owls ", "two owls"),
        ("/画 一只猫", "一只猫"),
        ("/draw", ""),
        ("draw me a cat", "a cat"),
        ("Please draw a dog.", "a dog"),
        ("generate an image of a red fox", "a red fox"),
        ("can you make me a picture of the sea", "the sea"),
    ],
)
def test_drawing_requests(text: str, prompt: str) -> None:
    assert drawing_request(text) == DrawRequest(prompt)


@pytest.mark.parametrize(
    "text",
    [
        "画家是谁",
        "画画很难",
        "油画是什么",
        "我想画一只猫",  # the user draws, not us
        "画一只猫难吗？",  # a question about drawing
        "how do I draw a cat?",
        "/drawing",
        "draw conclusions from this",
        "what is drawing",
        "做个总结",
        "来张图",  # nothing to draw
        "生成一个报告",
        "",
    ],
)
def test_not_drawing_requests(text: str) -> None:
    assert drawing_request(text) is None


def test_a_long_prompt_is_bounded() -> None:
    request = drawing_request("/draw " + "猫" * 5000)
    assert request is not None and len(request.prompt) == MAX_PROMPT_CHARS
