"""Sensitive-term matching: Aho-Corasick over normalised text.

Normalisation (traditional → simplified Chinese with OpenCC, NFKC folding full-width letters to
half-width, case folding, then dropping whitespace, zero-width characters and symbols) runs on
both the lexicon and the text, so the usual evasions ("Ｂａｄ", "b a d", "b.a.d", "禁語") still
match. Matches are mapped back to the original text so they can be masked in place.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import ahocorasick
import opencc

_ZERO_WIDTH = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"}


def _keep(ch: str) -> bool:
    if ch in _ZERO_WIDTH or ch.isspace():
        return False
    cat = unicodedata.category(ch)
    return not (cat.startswith("P") or cat.startswith("S") or cat.startswith("Z") or cat == "Cf")


class Simplifier:
    """Traditional → simplified Chinese, character-aligned (so matches map back to the source)."""

    def __init__(self) -> None:
        self._cc = opencc.OpenCC("t2s")

    def __call__(self, text: str) -> str:
        converted = str(self._cc.convert(text))
        if len(converted) == len(text):
            return converted
        return "".join(c if len(c := str(self._cc.convert(ch))) == 1 else ch for ch in text)


_FOLDING_MAX = 100_000  # distinct characters remembered (Unicode has ~150,000; texts use few)


class Folding(dict[int, str]):
    """What each character becomes in normalised text ("" when dropped), filled in as characters
    are first met — so that `text.translate(folding)` normalises a whole text in C. A per-character
    Python loop cost about a microsecond per character: half a millisecond per LLM answer."""

    def __missing__(self, code: int) -> str:
        folded = "".join(f for f in unicodedata.normalize("NFKC", chr(code)).casefold() if _keep(f))
        if len(self) < _FOLDING_MAX:
            self[code] = folded
        return folded


def normalise(
    text: str, simplify: Callable[[str], str] | None = None, folding: Folding | None = None
) -> tuple[str, list[int]]:
    """Normalised text and, for each of its characters, the index of the source character."""
    folding = Folding() if folding is None else folding
    if simplify is not None:
        text = simplify(text)
    norm = text.translate(folding)
    origin: list[int] = []
    for i, ch in enumerate(text):
        origin.extend([i] * len(folding[ord(ch)]))
    return norm, origin


@dataclass(frozen=True)
class Match:
    term: str
    start: int  # index in the original text
    end: int  # exclusive


class Lexicon:
    """An immutable automaton over normalised terms."""

    def __init__(self, terms: Iterable[str], simplify: Callable[[str], str] | None = None) -> None:
        self._simplify = simplify
        self._folding = Folding()
        self._automaton = ahocorasick.Automaton()
        count = 0
        for raw in terms:
            term, _ = normalise(raw.strip(), simplify, self._folding)
            if term:
                self._automaton.add_word(term, term)
                count += 1
        self.size = count
        if count:
            self._automaton.make_automaton()

    def find(self, text: str) -> list[Match]:
        if not self.size or not text:
            return []
        source = self._simplify(text) if self._simplify is not None else text
        found = list(self._automaton.iter(source.translate(self._folding)))
        if not found:  # the usual case: no positions needed
            return []
        _, origin = normalise(source, None, self._folding)
        return [Match(term=term, start=origin[end - len(term) + 1], end=origin[end] + 1) for end, term in found]

    def mask(self, text: str, char: str = "＊") -> tuple[str, int]:
        """Text with every matched span replaced by `char` per character, and the match count."""
        matches = self.find(text)
        if not matches:
            return text, 0
        chars = list(text)
        for m in matches:
            for i in range(m.start, m.end):
                if not chars[i].isspace():
                    chars[i] = char
        return "".join(chars), len(matches)


def lexicon_paths(files: str) -> list[Path]:
    return [Path(p.strip()) for p in files.split(",") if p.strip()]


def load_terms(files: str, inline: str) -> list[str]:
    """Terms from the given files (or the shipped default lexicon) plus inline ones."""
    terms: list[str] = []
    paths = lexicon_paths(files)
    if paths:
        for path in paths:
            terms.extend(_lines(path.read_text(encoding="utf-8")))
    else:
        default = resources.files("wxbot_safety").joinpath("lexicons/default.txt")
        terms.extend(_lines(default.read_text(encoding="utf-8")))
    terms.extend(t for t in inline.split(",") if t.strip())
    return terms


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
