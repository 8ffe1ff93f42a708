"""The examples of README.md and docs/*.md, as the doc tests see them.

A fenced ``sh`` or ``python`` block is an example. The line before a block may hold a directive:

* ``<!-- not run: REASON -->``: the example is not run, for the reason given;
* ``<!-- file: NAME -->`` (before any block): the block is a file the page's examples use; it is
  written to ``NAME`` in their working directory before they run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*(not run|file):\s*(.+?)\s*-->$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    text: str
    directive: tuple[str, str] | None

    @property
    def label(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        before = _DIRECTIVE.match(lines[index - 1]) if index else None
        text = "\n".join(lines[index + 1 : end]) + "\n"
        directive = (before.group(1), before.group(2)) if before else None
        found.append(Block(page, index + 1, opening.group(1), text, directive))
        index = end + 1
    return found


def examples() -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if b.language in ("sh", "python")]


def files(page: Path) -> dict[str, str]:
    found = (b for b in blocks(page) if b.directive and b.directive[0] == "file")
    return {b.directive[1]: b.text for b in found if b.directive}


def commands(script: str) -> list[str]:
    """The shell commands of a block, continuation lines joined, comments and blanks left out."""
    joined = script.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            found.append(line)
    return found
