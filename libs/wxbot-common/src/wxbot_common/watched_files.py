"""Files an operator edits (a lexicon, a knowledge base), reloaded when they change, without a restart.

Every replica checks the files' modification times every `every_s` and swaps in what `load` builds
from them; a file that cannot be read or parsed (one of `errors`) keeps the previous version in
service and says why in the log. In Kubernetes the files are a ConfigMap volume, which the kubelet
updates in place; the console's editor saves files whole by renaming, so a reload never sees half
a file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from wxbot_common.logs import get_logger


class Sized(Protocol):
    @property
    def size(self) -> int: ...


T = TypeVar("T", bound=Sized)


class WatchedFiles(Generic[T]):
    """`load()` the current version; `watch(every_s, swap)` hands each changed one to `swap`."""

    def __init__(
        self, paths: Sequence[Path], load: Callable[[], T], errors: tuple[type[Exception], ...], what: str
    ) -> None:
        self._paths = list(paths)
        self._load = load
        self._errors = errors
        self._what = what  # log events: <what>_reloaded, <what>_reload_failed
        self._stamps = self._read_stamps()
        self._log = get_logger(f"wxbot.{what}")

    def _read_stamps(self) -> dict[Path, float]:
        stamps = {}
        for path in self._paths:
            try:
                stamps[path] = path.stat().st_mtime
            except OSError:
                stamps[path] = -1.0
        return stamps

    def load(self) -> T:
        return self._load()

    def changed(self) -> bool:
        stamps = self._read_stamps()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        return True

    async def watch(self, every_s: float, swap: Callable[[T], None]) -> None:
        """Reload when a file changes, until cancelled."""
        if every_s <= 0 or not self._paths:
            return
        while True:
            await asyncio.sleep(every_s)  # a polling period, not a wait for a condition
            if not await asyncio.to_thread(self.changed):
                continue
            try:
                loaded = await asyncio.to_thread(self.load)
            except self._errors as exc:
                self._log.error(f"{self._what}_reload_failed", error=repr(exc), kept=f"previous {self._what}")
                continue
            swap(loaded)
            self._log.info(f"{self._what}_reloaded", size=loaded.size)
