"""Knowledge-base and lexicon files: refused with the reason and left as they were, or replaced whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from wxbot_console.editable_files import EditableFiles, InvalidFileError


@pytest.fixture
def files(tmp_path: Path) -> EditableFiles:
    (tmp_path / "faq.yaml").write_text("- q: a\n  a: b\n")
    (tmp_path / "faq.md").write_text("## q\nanswer\n")
    (tmp_path / "words.txt").write_text("old\n")
    kb = [str(tmp_path / "faq.yaml"), str(tmp_path / "faq.md")]
    return EditableFiles(kb, [str(tmp_path / "words.txt")], max_bytes=1000)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("- q: [unclosed\n", "not valid YAML"),
        ("q: a\na: b\n", "must be a list"),
        ("- q: only\n", "needs both"),
        ("- q: ''\n  a: b\n", "'q' must be"),
        ("- q: x\n  a: '  '\n", "'a' is empty"),
        ("x" * 1001, "at most 1000"),
    ],
)
def test_a_bad_yaml_kb_is_refused_and_the_file_kept(files: EditableFiles, text: str, why: str) -> None:
    file = files.find("kb", 0)
    assert file is not None
    with pytest.raises(InvalidFileError, match=why):
        files.save(file, text)
    assert files.read(file) == "- q: a\n  a: b\n"


def test_markdown_kb_and_lexicon(files: EditableFiles) -> None:
    md, words = files.find("kb", 1), files.find("lexicon", 0)
    assert md is not None and words is not None
    with pytest.raises(InvalidFileError, match="no question or no answer"):
        files.save(md, "## question without answer\n")
    assert files.save(md, "## 问题一 | q1\n答案\n## 问题二\n答案二\n") == 2
    with pytest.raises(InvalidFileError, match="one term per line"):
        files.save(words, "ok\n" + "长" * 101 + "\n")
    assert files.save(words, "# comment\n甲\r\n乙\n\n") == 2
    assert words.path.read_bytes() == "# comment\n甲\n乙\n\n".encode()
    assert [p.name for p in words.path.parent.iterdir() if p.name.startswith(".")] == []  # no temp left
    assert files.find("lexicon", 5) is None and files.find("other", 0) is None
