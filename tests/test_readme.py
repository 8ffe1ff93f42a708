"""The README and docs/ document every option of every command (the CLI is a public contract)."""

from __future__ import annotations

from pathlib import Path

import pytest

from beats.cli import DEMO, EMULATE, RUN, SIMULATE, TAIL, Command

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = "\n".join(page.read_text() for page in PAGES)
COMMANDS = {
    **{f"run {k}": c for k, c in RUN.items()},
    **{f"emulate {k}": c for k, c in EMULATE.items()},
    **{f"simulate {k}": c for k, c in SIMULATE.items()},
    "demo": DEMO,
    "tail": TAIL,
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_is_documented(name: str) -> None:
    command: Command = COMMANDS[name]
    settings_class, _ = command.load()
    assert f"beats {name}" in README
    for field, info in settings_class.model_fields.items():
        if any("Positional" in getattr(m, "__name__", "") for m in info.metadata):
            assert f"beats {name} {field.upper()}" in README, f"{name}: positional {field}"
            continue
        option = "--" + field.replace("_", "-")
        assert f"`{option}`" in README, f"{name}: {option} is not documented"
        assert f"`BEATS_{field.upper()}`" in README, f"{name}: BEATS_{field.upper()}"
