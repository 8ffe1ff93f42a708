"""Every link of README.md and docs/*.md resolves inside the repository: the file exists, the
anchor is a heading of that page, and no relative link leaves the checkout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.examples import PAGES, ROOT

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+\s+(.*)$")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and (heading := _HEADING.match(line)):
            found.add(_slug(heading.group(1)))
    return found


def _links(page: Path) -> list[str]:
    return [m.group(1) for m in _LINK.finditer(page.read_text())]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    for target in _links(page):
        if re.match(r"^[a-z]+:", target):
            continue  # a web address (specifications, upstream projects)
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.name}: no heading for {target}"


def test_the_slug_rule_matches_github_on_this_repositorys_headings() -> None:
    assert _slug("Lifecycle: ports, signals, exit codes") == "lifecycle-ports-signals-exit-codes"
    assert _slug("The event: `beats.hivemq.message`") == "the-event-beatshivemqmessage"
