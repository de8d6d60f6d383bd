"""The lexicon an operator maintains: SAFETY_WORDLIST_FILES reloaded every SAFETY_LEXICON_RELOAD_S
when they change (`wxbot_common.watched_files`); a file that cannot be read keeps the previous
lexicon in service."""

from __future__ import annotations

from wxbot_common.watched_files import WatchedFiles
from wxbot_safety.lexicon import Lexicon, Simplifier, lexicon_paths, load_terms


class LexiconSource(WatchedFiles[Lexicon]):
    def __init__(self, files: str, inline: str) -> None:
        simplify = Simplifier()
        super().__init__(
            lexicon_paths(files),
            lambda: Lexicon(load_terms(files, inline), simplify),
            (OSError, UnicodeDecodeError),
            "lexicon",
        )
