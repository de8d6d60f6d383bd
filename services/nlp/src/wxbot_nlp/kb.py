"""Knowledge base: operator FAQ files answered by BM25 over character n-grams.

Character unigrams and bigrams work for Chinese without a word segmenter or any model download,
and for English well enough for FAQ matching (words are lower-cased; bigrams of letters carry
word order). Confidence is the best BM25 score divided by the score the matched question gets
against itself, so it is comparable across questions (≈1 for an exact rephrase, ~0 unrelated).
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from rank_bm25 import BM25Okapi

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]", re.IGNORECASE)


def tokens(text: str) -> list[str]:
    """Lower-cased words and single CJK characters, plus bigrams of neighbouring tokens."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    units = [u for u in _WORD.findall(norm) if u.isalnum()]
    return units + [a + b for a, b in itertools.pairwise(units)]


class PositiveIdfBM25(BM25Okapi):  # type: ignore[misc]
    """BM25 with Lucene's idf, log(1 + (N − n + ½)/(n + ½)), which stays positive: an operator's FAQ
    of three entries must still rank (Okapi's idf is zero or negative for terms in half the corpus)."""

    def _calc_idf(self, nd: dict[str, int]) -> None:
        n = self.corpus_size
        self.idf = {word: math.log(1 + (n - freq + 0.5) / (freq + 0.5)) for word, freq in nd.items()}
        self.average_idf = sum(self.idf.values()) / max(1, len(self.idf))


@dataclass(frozen=True)
class Faq:
    questions: tuple[str, ...]
    answer: str


@dataclass(frozen=True)
class KbMatch:
    answer: str
    question: str
    confidence: float


def parse_yaml(text: str) -> list[Faq]:
    """`- q: question (or a list of phrasings)\\n  a: answer` entries."""
    data = yaml.safe_load(text) or []
    faqs = []
    for entry in data if isinstance(data, list) else []:
        if not isinstance(entry, dict) or "a" not in entry or "q" not in entry:
            continue
        qs = entry["q"] if isinstance(entry["q"], list) else [entry["q"]]
        faqs.append(Faq(tuple(str(q) for q in qs), str(entry["a"]).strip()))
    return faqs


def parse_markdown(text: str) -> list[Faq]:
    """`## question` headings (alternative phrasings separated by ` | `), the answer below."""
    faqs = []
    for block in re.split(r"^##\s+", text, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        if body.strip():
            faqs.append(Faq(tuple(q.strip() for q in heading.split("|") if q.strip()), body.strip()))
    return faqs


def load_faqs(paths: Iterable[Path], include_shipped: bool = True) -> list[Faq]:
    """The shipped FAQ (if `include_shipped`) and the operator's files (NLP_KB_FILES, `NlpSettings.kb_paths`)."""
    faqs: list[Faq] = []
    if include_shipped:
        shipped = resources.files("wxbot_nlp").joinpath("knowledge/wxbot.yaml")
        faqs.extend(parse_yaml(shipped.read_text(encoding="utf-8")))
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
            faqs.extend(parse_markdown(text) if path.suffix.lower() in (".md", ".markdown") else parse_yaml(text))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"NLP_KB_FILES: cannot read {path}: {exc}") from exc
    return faqs


class KnowledgeBase:
    def __init__(self, faqs: Iterable[Faq]) -> None:
        self._rows: list[tuple[str, str]] = [(q, f.answer) for f in faqs for q in f.questions]
        corpus = [tokens(q) or ["∅"] for q, _ in self._rows]
        self._bm25 = PositiveIdfBM25(corpus) if corpus else None
        self._self = [float(self._bm25.get_scores(doc)[i]) for i, doc in enumerate(corpus)] if self._bm25 else []

    @property
    def size(self) -> int:
        return len(self._rows)

    def search(self, question: str) -> KbMatch | None:
        query = tokens(question)
        if self._bm25 is None or not query:
            return None
        scores = self._bm25.get_scores(query)
        best = int(scores.argmax())
        if scores[best] <= 0 or self._self[best] <= 0:
            return None
        confidence = min(1.0, float(scores[best]) / self._self[best])
        q, answer = self._rows[best]
        return KbMatch(answer=answer, question=q, confidence=confidence)
