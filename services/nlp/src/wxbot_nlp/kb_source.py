"""The knowledge base an operator maintains: NLP_KB_FILES reloaded every NLP_KB_RELOAD_S when they
change (`wxbot_common.watched_files`, as safety's lexicon); a file that cannot be read or parsed
keeps the previous knowledge base in service."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wxbot_common.watched_files import WatchedFiles
from wxbot_nlp.kb import KnowledgeBase, load_faqs


class KbSource(WatchedFiles[KnowledgeBase]):
    def __init__(self, paths: Sequence[Path], include_shipped: bool) -> None:
        # load_faqs raises ValueError for an unreadable file, bad UTF-8 or YAML
        super().__init__(paths, lambda: KnowledgeBase(load_faqs(paths, include_shipped)), (ValueError,), "kb")
