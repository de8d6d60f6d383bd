"""The knowledge base an operator maintains: NLP_KB_FILES reloaded when they change, without a restart.

As safety's lexicon (`LexiconSource`): every replica checks the files' modification times every
NLP_KB_RELOAD_S and swaps in a new index; a file that cannot be read or parsed keeps the previous
knowledge base in service (and says why in the log). The console's editor saves files whole by
renaming, so a reload never sees half a file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from wxbot_common.logs import get_logger
from wxbot_nlp.kb import KnowledgeBase, load_faqs


class KbSource:
    def __init__(self, files: str, include_shipped: bool) -> None:
        self._files = files
        self._include_shipped = include_shipped
        self._paths = [Path(p.strip()) for p in files.split(",") if p.strip()]
        self._stamps = self._read_stamps()
        self._log = get_logger("wxbot.nlp.kb")

    def _read_stamps(self) -> dict[Path, float]:
        stamps = {}
        for path in self._paths:
            try:
                stamps[path] = path.stat().st_mtime
            except OSError:
                stamps[path] = -1.0
        return stamps

    def load(self) -> KnowledgeBase:
        return KnowledgeBase(load_faqs(self._files, self._include_shipped))

    def changed(self) -> bool:
        stamps = self._read_stamps()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        return True

    async def watch(self, every_s: float, swap: Callable[[KnowledgeBase], None]) -> None:
        """Reload when a file changes, until cancelled."""
        if every_s <= 0 or not self._paths:
            return
        while True:
            await asyncio.sleep(every_s)  # a polling period, not a wait for a condition
            if not await asyncio.to_thread(self.changed):
                continue
            try:
                knowledge = await asyncio.to_thread(self.load)
            except ValueError as exc:  # load_faqs: unreadable file, bad UTF-8 or YAML
                self._log.error("kb_reload_failed", error=str(exc), kept="previous knowledge base")
                continue
            swap(knowledge)
            self._log.info("kb_reloaded", entries=knowledge.size)
