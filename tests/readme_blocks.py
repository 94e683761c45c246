"""The fenced code blocks of README.md, with their section and line number (tests/test_readme.py)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

README = Path(__file__).resolve().parents[1] / "README.md"
_FENCE = re.compile(r"^```(\S*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: ``line`` is the 1-based README line of its first code line."""

    language: str
    code: str
    line: int
    section: str      #: the nearest ``##`` heading above it
    subsection: str   #: the nearest heading of any level above it (the section itself when none)

    @property
    def where(self) -> str:
        """``README.md:LINE (section)``, for messages and tracebacks."""
        place = self.section if self.subsection == self.section else f"{self.section} / {self.subsection}"
        return f"README.md:{self.line} ({place})"

    def compiled(self):
        """The code compiled with README's line numbers: a traceback names README.md and the line."""
        return compile("\n" * (self.line - 1) + self.code, str(README), "exec")


def readme_blocks(text: Optional[str] = None, language: Optional[str] = None) -> List[Block]:
    """Every fenced block of README.md (or of ``text``), in order; only ``language``'s when given.

    An unclosed fence raises ``ValueError`` with its line: a broken README is a failure, not a skip.
    """
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: List[Block] = []
    section = subsection = ""
    index = 0
    while index < len(lines):
        heading = _HEADING.match(lines[index])
        fence = _FENCE.match(lines[index])
        if heading:
            subsection = heading.group(2)
            if len(heading.group(1)) <= 2:
                section = subsection
        elif fence:
            start = index + 1
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise ValueError(f"README.md:{index + 1}: unclosed ``` fence")
            code = "\n".join(lines[start:end]) + "\n"
            blocks.append(Block(fence.group(1), code, start + 1, section, subsection))
            index = end
        index += 1
    return [block for block in blocks if language is None or block.language == language]
