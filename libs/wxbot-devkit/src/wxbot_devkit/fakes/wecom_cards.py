"""Interactive template cards of the fake WeCom: `button_interaction` cards sent with message/send,
the users' clicks (each hands out a response code), and `message/update_template_card`.

As strict as the documented service (shared/design/research/wecom-media-oauth-cards.md §5): a
task id is unique per app, `[0-9A-Za-z_-@]`, at most 128 bytes (else 42014); at most six buttons,
each with a unique key of at most 1024 bytes; a response code is single-use and expires after 72
hours. Which errcode a spent or unknown response code gets is not documented: 40058 (invalid
parameter) here.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

TASK_ID = re.compile(r"^[0-9A-Za-z_\-@]{1,128}$")
RESPONSE_CODE_TTL_S = 72 * 3600
BAD_RESPONSE_CODE = 40058
DUPLICATE_TASK = 42014


@dataclass
class Card:
    touser: str
    task_id: str
    title: str
    keys: list[str]
    sent_at: float
    replaced_with: str = ""  # the button text after update_template_card ("" = not updated)


@dataclass
class CardDesk:
    """The cards of one fake app; thread-safe."""

    code_ttl_s: float = RESPONSE_CODE_TTL_S
    cards: dict[str, Card] = field(default_factory=dict)
    _codes: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # code -> (user, task, expiry)
    updates: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, touser: str, section: object) -> int:
        """The errcode of a template_card section (0: acceptable)."""
        if not isinstance(section, dict) or section.get("card_type") != "button_interaction":
            return 40008  # the fake knows button_interaction cards only
        title = section.get("main_title")
        if not isinstance(title, dict) or not isinstance(title.get("title"), str) or not title["title"]:
            return 47001
        task_id = section.get("task_id")
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            return DUPLICATE_TASK  # "taskid has existed or empty or exceed max len"
        buttons = section.get("button_list")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 6:
            return 47001
        keys = [b.get("key") for b in buttons if isinstance(b, dict)]
        if len(keys) != len(buttons) or not all(isinstance(k, str) and 0 < len(k.encode()) <= 1024 for k in keys):
            return 47001
        if len(set(keys)) != len(keys) or not all(isinstance(b.get("text"), str) and b["text"] for b in buttons):
            return 47001
        with self._lock:
            if task_id in self.cards:
                return DUPLICATE_TASK
        return 0

    def accept(self, touser: str, section: dict[str, Any]) -> str | None:
        """Record a checked card; the response code of the send, or None when another send took its
        task_id since `check` (the duplicate check and the record are one step, as in WeCom)."""
        card = Card(
            touser,
            section["task_id"],
            section["main_title"]["title"],
            [b["key"] for b in section["button_list"]],
            time.time(),
        )
        with self._lock:
            if card.task_id in self.cards:
                return None
            self.cards[card.task_id] = card
        return self._issue(touser, card.task_id)

    def _issue(self, user: str, task_id: str) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = (user, task_id, time.monotonic() + self.code_ttl_s)
        return code

    def click(self, user: str, task_id: str, key: str) -> str:
        """A user presses a button: the ResponseCode its template_card_event callback carries."""
        with self._lock:
            card = self.cards.get(task_id)
        if card is None or user not in card.touser.split("|") or key not in card.keys:
            raise ValueError(f"{user} cannot press {key!r} on card {task_id!r}")
        return self._issue(user, task_id)

    def expire_codes(self) -> None:
        """Every response code issued so far is now older than 72 hours."""
        with self._lock:
            self._codes = {c: (u, t, 0.0) for c, (u, t, _) in self._codes.items()}

    def update(self, body: object) -> int:
        """message/update_template_card: the errcode (0: the card's button was replaced)."""
        if not isinstance(body, dict) or not isinstance(body.get("response_code"), str):
            return 47001
        button = body.get("button")
        if not isinstance(button, dict) or not isinstance(button.get("replace_name"), str):
            return 47001
        with self._lock:
            found = self._codes.pop(body["response_code"], None)  # single use, spent even if refused below
            if found is None or found[2] < time.monotonic():
                return BAD_RESPONSE_CODE
            user, task_id, _ = found
            userids = body.get("userids")
            if not isinstance(userids, list) or user not in userids:
                return 47001
            self.cards[task_id].replaced_with = button["replace_name"]
            self.updates.append({"task_id": task_id, "user": user, "replace_name": button["replace_name"]})
        return 0

    def reset(self) -> None:
        with self._lock:
            self.cards.clear()
            self._codes.clear()
            self.updates.clear()
