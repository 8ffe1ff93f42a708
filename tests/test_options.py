"""Every option of every command has an effect, or is in :data:`NO_OPS` with its reason.

An option is a field of a command's settings class (``beats run <beat>``, the gateway, each
emulator and simulator, ``beats log``, ``demo``, ``tail``). It has an effect when the code reads
it outside the settings classes: an attribute (``settings.kafka_partitions``), a
``getattr(settings, "log_json")``, or a parameter of the same name that a function uses (the
emulators forward ``settings.model_dump()`` as keyword arguments). A settings method counts when
code outside uses that method (``settings.broker()`` reads ``mqtt_username``). A ``--x-file``
option has the effect of ``--x`` (common.settings reads it into ``x``). The check reads the
source (ast), so it names the option that nothing reads; what each one does is tested where
it is built (``--kafka-partitions``: tests/test_kafka_topics.py, and so on).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from pydantic_settings import BaseSettings

from beats.cli import DEMO, EMULATE, LOG, RUN, SIMULATE, TAIL, Command
from common.settings import _secret_of

ROOT = Path(__file__).parent.parent
PACKAGES = ("common", "beats", "gateway")
COMMANDS: dict[str, Command] = {
    **{f"run {k}": c for k, c in RUN.items()},
    **{f"emulate {k}": c for k, c in EMULATE.items()},
    **{f"simulate {k}": c for k, c in SIMULATE.items()},
    **{f"log {k}": c for k, c in LOG.items()},
    "demo": DEMO,
    "tail": TAIL,
}
NO_OPS: dict[str, str] = {}
"""``"<command> <field>"`` → why the option is accepted and does nothing (none today)."""


def settings_classes() -> dict[str, type[BaseSettings]]:
    return {name: command.load()[0] for name, command in COMMANDS.items()}


def _names_read(node: ast.AST) -> Iterator[str]:
    """Attribute names, ``getattr`` constants and used parameters in ``node``."""
    for child in ast.walk(node):
        if isinstance(child, ast.Attribute):
            yield child.attr
        elif isinstance(child, ast.Call) and isinstance(child.func, ast.Name):
            args = child.args
            if child.func.id == "getattr" and len(args) > 1 and isinstance(args[1], ast.Constant):
                yield str(args[1].value)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            loaded = {n.id for n in ast.walk(child) if isinstance(n, ast.Name)}
            every = [*child.args.args, *child.args.kwonlyargs, *child.args.posonlyargs]
            yield from (a.arg for a in every if a.arg in loaded)


def names_read(settings_names: set[str]) -> set[str]:
    """Every name the code reads; settings methods add what they read once they are used."""
    outside: set[str] = set()
    methods: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name in settings_names:
                    for method in node.body:
                        if isinstance(method, ast.FunctionDef):
                            methods.setdefault(method.name, set()).update(_names_read(method))
                else:
                    outside.update(_names_read(node))
    grown = True
    while grown:
        before = len(outside)
        for used in [m for m in methods if m in outside]:
            outside |= methods.pop(used)
        grown = len(outside) > before
    return outside


def unread_options(classes: dict[str, type[BaseSettings]]) -> list[str]:
    """``beats <command>: --<option>`` of every option nothing reads."""
    names = {c.__name__ for cls in classes.values() for c in cls.__mro__}
    read = names_read(names)
    unread = []
    for command, cls in sorted(classes.items()):
        for field, info in cls.model_fields.items():
            effect = _secret_of(info) or field
            if effect not in read and f"{command} {field}" not in NO_OPS:
                unread.append(f"beats {command}: --{field.replace('_', '-')}")
    return unread


def test_every_option_of_every_command_is_read_or_a_documented_no_op() -> None:
    assert unread_options(settings_classes()) == []


def test_the_check_finds_an_option_nothing_reads() -> None:
    """The check can fail: a field added to the beats' shared settings and read nowhere."""
    from pydantic import Field

    from common.settings import BeatSettings

    class Unread(BeatSettings):
        kafka_compression_level: int = Field(3, description="read by nothing")

    classes: dict[str, type[BaseSettings]] = {**settings_classes(), "run unread": Unread}
    assert unread_options(classes) == ["beats run unread: --kafka-compression-level"]


def test_every_documented_no_op_is_a_real_option() -> None:
    classes = settings_classes()
    for entry, reason in NO_OPS.items():
        command, _, field = entry.rpartition(" ")
        assert field in classes[command].model_fields, entry
        assert reason.strip(), entry
