"""Choosing which turns fit a token budget (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from wxbot_context.store import StoredTurn


def fit_budget(turns: Sequence[StoredTurn], budget: int) -> tuple[list[StoredTurn], int]:
    """The newest turns whose estimated tokens fit `budget`, oldest first, and their total.

    A history never starts with an orphan assistant turn: models expect a user turn first.
    """
    chosen: list[StoredTurn] = []
    total = 0
    for turn in reversed(turns):
        cost = turn.tokens
        if total + cost > budget:
            break
        chosen.append(turn)
        total += cost
    chosen.reverse()
    while chosen and chosen[0].role != "user":
        total -= chosen.pop(0).tokens
    return chosen, total
