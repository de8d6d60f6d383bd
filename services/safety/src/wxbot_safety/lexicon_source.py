"""The lexicon an operator maintains: files reloaded when they change, without a restart.

Operators edit the files named by SAFETY_WORDLIST_FILES (in Kubernetes: a ConfigMap mounted as a
volume, which the kubelet updates in place); every replica notices the new modification time
within SAFETY_LEXICON_RELOAD_S and swaps in a new automaton. A file that cannot be read keeps the
previous lexicon in service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from wxbot_common.logs import get_logger
from wxbot_safety.lexicon import Lexicon, Simplifier, lexicon_paths, load_terms


class LexiconSource:
    def __init__(self, files: str, inline: str) -> None:
        self._files = files
        self._inline = inline
        self._paths = lexicon_paths(files)
        self._simplify = Simplifier()
        self._stamps = self._read_stamps()
        self._log = get_logger("wxbot.safety.lexicon")

    def _read_stamps(self) -> dict[Path, float]:
        stamps = {}
        for path in self._paths:
            try:
                stamps[path] = path.stat().st_mtime
            except OSError:
                stamps[path] = -1.0
        return stamps

    def load(self) -> Lexicon:
        return Lexicon(load_terms(self._files, self._inline), self._simplify)

    def changed(self) -> bool:
        stamps = self._read_stamps()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        return True

    async def watch(self, every_s: float, swap: Callable[[Lexicon], None]) -> None:
        """Reload when a file changes, until cancelled."""
        if every_s <= 0 or not self._paths:
            return
        while True:
            await asyncio.sleep(every_s)  # a polling period, not a wait for a condition
            if not await asyncio.to_thread(self.changed):
                continue
            try:
                lexicon = await asyncio.to_thread(self.load)
            except (OSError, UnicodeDecodeError) as exc:
                self._log.error("lexicon_reload_failed", error=repr(exc), kept="previous lexicon")
                continue
            swap(lexicon)
            self._log.info("lexicon_reloaded", terms=lexicon.size)
