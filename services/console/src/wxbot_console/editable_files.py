"""Knowledge-base and lexicon files an admin may edit: validated, then replaced atomically.

The services notice a file's new modification time and reload it themselves (safety's
`LexiconSource`, nlp's knowledge base), so saving here is all it takes. A file that does not
validate is refused with the reason and left as it was; a file is written to a temporary
neighbour and renamed over the old one, so a service never reads half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

Kind = Literal["kb", "lexicon"]
MAX_TERM_CHARS = 100


class InvalidFileError(ValueError):
    """Why the text cannot be saved (shown to the admin as it is)."""


@dataclass(frozen=True, slots=True)
class EditableFile:
    kind: Kind
    index: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


class EditableFiles:
    def __init__(self, kb: list[str], lexicon: list[str], max_bytes: int) -> None:
        self.files = [EditableFile("kb", i, Path(p)) for i, p in enumerate(kb)]
        self.files += [EditableFile("lexicon", i, Path(p)) for i, p in enumerate(lexicon)]
        self.max_bytes = max_bytes

    def find(self, kind: str, index: int) -> EditableFile | None:
        return next((f for f in self.files if f.kind == kind and f.index == index), None)

    def read(self, file: EditableFile) -> str:
        try:
            return file.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def save(self, file: EditableFile, text: str) -> int:
        """Validate and write; the number of entries (FAQs or terms) now in the file."""
        data = text.replace("\r\n", "\n").encode("utf-8", errors="strict")
        if len(data) > self.max_bytes:
            raise InvalidFileError(f"the file is {len(data)} bytes; at most {self.max_bytes} are accepted")
        if "\x00" in text:
            raise InvalidFileError("the text contains a NUL character")
        count = validate_kb(file.path, text) if file.kind == "kb" else validate_lexicon(text)
        file.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.path.parent, prefix=f".{file.path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, file.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return count


def validate_lexicon(text: str) -> int:
    """One term per line; `#` starts a comment line. Returns the number of terms."""
    terms = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for number, term in enumerate(terms, 1):
        if len(term) > MAX_TERM_CHARS:
            raise InvalidFileError(f"term {number} is longer than {MAX_TERM_CHARS} characters: one term per line")
    return len(terms)


def validate_kb(path: Path, text: str) -> int:
    """The FAQ format nlp reads: Markdown `## question` + answer, or YAML `- q: … a: …` entries."""
    if path.suffix.lower() in (".md", ".markdown"):
        blocks = re.split(r"^##\s+", text, flags=re.MULTILINE)[1:]
        for block in blocks:
            heading, _, body = block.partition("\n")
            if not heading.strip() or not body.strip():
                raise InvalidFileError(f"the entry '## {heading.strip()[:40]}' has no question or no answer")
        return len(blocks)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidFileError(f"not valid YAML: {exc}") from exc
    if data is None:
        return 0
    if not isinstance(data, list):
        raise InvalidFileError("the YAML must be a list of entries: - q: question  a: answer")
    for number, entry in enumerate(data, 1):
        if not isinstance(entry, dict) or "q" not in entry or "a" not in entry:
            raise InvalidFileError(f"entry {number} needs both 'q' (question) and 'a' (answer)")
        questions = entry["q"] if isinstance(entry["q"], list) else [entry["q"]]
        if not questions or not all(isinstance(q, str | int | float) and str(q).strip() for q in questions):
            raise InvalidFileError(f"entry {number}: 'q' must be a question or a list of questions")
        if not str(entry["a"]).strip():
            raise InvalidFileError(f"entry {number}: 'a' is empty")
    return len(data)
