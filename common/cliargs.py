"""Options of a command read like argparse's: real defaults in ``--help``, one line per error.

:func:`parse_settings` reads a settings class from the command line (pydantic-settings'
``CliApp``) and the ``BEATS_*`` environment. ``--help`` shows each option's real default
(``(default: #)``, ``(default: not set)``), never a default factory's name or ``null``. An
invalid value exits with status 2, as argparse does, with one line per error on stderr naming
the flag and what it accepts (``beats run hivemq: error: argument --port: input should be a
valid integer (got 'x')``), never pydantic's internals.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    CLI_SUPPRESS,
    BaseSettings,
    CliApp,
    CliSettingsSource,
    SettingsError,
)
from pydantic_settings.sources.types import _CliPositionalArg

from common.settings import is_secret

__all__ = ["default_text", "error_lines", "parse_settings"]

S = TypeVar("S", bound=BaseSettings)


def default_text(info: FieldInfo) -> str:
    """What ``--help`` says of a field's default: ``default: 8101``, ``default: not set``."""
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "default: not set"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "default: " + (", ".join(str(item) for item in value) if value else "none")
    if isinstance(value, Enum):
        value = value.value
    return f"default: {value}"


class _HelpSource(CliSettingsSource[Any]):
    """The CLI source with truthful defaults in the help (pydantic-settings prints the name of a
    default factory, ``<lambda>``, and ``null`` for ``None``). ``_help_format`` is a private
    method of pydantic-settings: the reason its version is pinned exactly."""

    def _help_format(
        self,
        field_name: str,
        field_info: FieldInfo,
        model_default: Any,
        is_model_suppressed: bool,
        env_var_names: tuple[str, ...] = (),
    ) -> str:
        text: str = super()._help_format(
            field_name, field_info, model_default, is_model_suppressed, env_var_names
        )
        if text == CLI_SUPPRESS or field_info.is_required():
            return text
        head, found, _ = text.rpartition(" (default")
        if not found:
            return text  # a toggle flag: pydantic-settings shows no default for it
        return f"{head} ({default_text(field_info).replace('%', '%%')})"


def option_name(settings_class: type[BaseSettings], field: str) -> str:
    """``--log-level`` for ``log_level``; ``URL`` for a positional argument."""
    info = settings_class.model_fields.get(field)
    if info is not None and _CliPositionalArg in info.metadata:
        return field.upper()
    return "--" + field.replace("_", "-")


def error_lines(settings_class: type[BaseSettings], exc: ValidationError) -> list[str]:
    """One line per error: the flag, what is wrong and allowed, the value given (not a secret's)."""
    return [_error_line(settings_class, error) for error in exc.errors(include_url=False)]


def _error_line(settings_class: type[BaseSettings], error: ErrorDetails) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    field = str(error["loc"][0]) if error["loc"] else ""
    info = settings_class.model_fields.get(field)
    if info is None:
        return message  # a check across options: its message names them
    given = error.get("input")
    if (
        not is_secret(info.annotation)
        and isinstance(given, str | int | float)
        and repr(given) not in message
    ):
        message += f" (got {given!r})"
    return f"argument {option_name(settings_class, field)}: {message}"


def parse_settings(settings_class: type[S], args: list[str], *, prog: str) -> S:
    """The settings of ``prog`` from ``args`` and the environment; exits 2 on an invalid one."""
    source = _HelpSource(settings_class, cli_prog_name=prog)
    try:
        return CliApp.run(settings_class, cli_args=args, cli_settings_source=source)
    except ValidationError as exc:
        lines = error_lines(settings_class, exc)
    except SettingsError as exc:
        lines = [str(exc).removeprefix("error parsing CLI: ")]
    for line in lines:
        print(f"{prog}: error: {line}", file=sys.stderr)
    raise SystemExit(2)
