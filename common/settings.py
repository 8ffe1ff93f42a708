"""Settings shared by every service, read from the command line and ``BEATS_*`` variables.

Every field is an option: ``data_dir`` is ``--data-dir`` on the command line and
``BEATS_DATA_DIR`` in the environment (the command line wins). Lists take a repeated option
(``--mqtt-topic a --mqtt-topic b``) or, in the environment, a comma-separated or JSON list.
Secrets are ``SecretStr``: they never appear in ``repr``, logs or errors. Every secret option
``--x`` has a ``--x-file`` companion (``BEATS_X_FILE``, declared with :func:`secret_file`) that
reads it from a file — a Docker or Kubernetes secret mounted as a file keeps it out of the
command line (``/proc/*/cmdline``) and the environment. A class with a secret and no such
companion is refused when it is defined.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "BeatSettings",
    "KafkaClientSettings",
    "LogLevel",
    "ServiceSettings",
    "StrList",
    "is_secret",
    "secret_file",
    "split_list",
]

LogLevel = Literal["debug", "info", "warning", "error"]

_SECRET_OF = "secret_of"


def secret_file(secret: str) -> Any:
    """The ``<secret>_file`` option of the ``SecretStr`` option ``secret``."""
    flag = "--" + secret.replace("_", "-")
    return Field(
        None,
        description=f"Read {flag} from this file (a mounted Docker or Kubernetes secret; "
        "one trailing newline is dropped; an empty file leaves it unset).",
        json_schema_extra={_SECRET_OF: secret},
    )


def is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return SecretStr in get_args(annotation)
    return False


def _choices(annotation: Any) -> list[str]:
    """The string values of a ``Literal`` annotation (also inside ``X | None``)."""
    if get_origin(annotation) is Literal:
        return [value for value in get_args(annotation) if isinstance(value, str)]
    if get_origin(annotation) in (Union, types.UnionType):
        return [value for arg in get_args(annotation) for value in _choices(arg)]
    return []


def fold_case(settings_class: type[BaseSettings], data: Any) -> Any:
    """``data`` with each ``Literal`` option's value spelt as its choice (``INFO`` → ``info``)."""
    if not isinstance(data, dict):
        return data
    folded = dict(data)
    for name, info in settings_class.model_fields.items():
        value = folded.get(name)
        if not isinstance(value, str):
            continue
        for choice in _choices(info.annotation):
            if choice.casefold() == value.casefold():
                folded[name] = choice
    return folded


def _secret_of(info: FieldInfo) -> str | None:
    extra = info.json_schema_extra
    found = extra.get(_SECRET_OF) if isinstance(extra, dict) else None
    return found if isinstance(found, str) else None


def read_secret(path: Path, option: str) -> SecretStr | None:
    """The secret in ``path`` (``None`` for an empty file: the option stays unset);
    ``ValueError`` naming the file, never its content."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{option}-file {path}: cannot read it ({reason})") from None
    text = text.removesuffix("\n").removesuffix("\r")
    return SecretStr(text) if text else None


def split_list(value: Any) -> Any:
    """Accept ``a,b``, ``["a", "b"]`` or a list for list-valued options."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f'not a JSON list ({exc.msg}); give a,b or a JSON list such as ["a", "b"]'
                ) from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


StrList = Annotated[list[str], NoDecode]


class CommandSettings(BaseSettings):
    """Options of a ``beats`` command: ``--kebab-case`` flags, ``BEATS_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="BEATS_",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,  # --seed int, not --seed {int,null}
        extra="ignore",
        hide_input_in_errors=True,  # an error must not print a secret that was given
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, info in cls.model_fields.items():
            if is_secret(info.annotation) and f"{name}_file" not in cls.model_fields:
                raise TypeError(f"{cls.__name__}.{name} is a secret without a {name}_file option")

    @model_validator(mode="before")
    @classmethod
    def _fold_case(cls, data: Any) -> Any:
        return fold_case(cls, data)

    @model_validator(mode="after")
    def _read_secret_files(self) -> CommandSettings:
        for name, info in type(self).model_fields.items():
            secret, path = _secret_of(info), getattr(self, name)
            if secret is None or path is None:
                continue
            option = "--" + secret.replace("_", "-")
            if getattr(self, secret) is not None:
                raise ValueError(f"give {option} or {option}-file, not both")
            setattr(self, secret, read_secret(Path(path), option))
        return self


class ServiceSettings(CommandSettings):
    """Options of every service (beats and gateway)."""

    host: str = Field("127.0.0.1", description="Interface the HTTP server listens on.")
    port: int = Field(0, description="HTTP port (each service has its own default).")
    log_level: LogLevel = Field("info", description="Log level.")
    log_json: bool = Field(False, description="Log one JSON object per line.")
    shutdown_timeout: float = Field(
        10.0, description="Seconds a graceful shutdown may take before tasks are cancelled."
    )
    http_head_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a complete request head (slowloris guard).",
    )
    http_body_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a client has, once its request head is in, to send the whole body; "
        "later it gets 408 and the connection is closed.",
    )
    http_max_body_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="Largest request body, counted as it arrives (chunked included); "
        "larger ones get 413.",
    )


class KafkaClientSettings(ServiceSettings):
    """Options of every service that talks to Kafka: where it is and how to connect."""

    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers, comma-separated (unset: Kafka off)."
    )
    kafka_topic_prefix: str = Field("beats", description="Topics are <prefix>.<beat>.<channel>.")
    kafka_timeout: float = Field(10.0, description="Bound, in seconds, on every Kafka call.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_sasl_password_file: Path | None = secret_file("kafka_sasl_password")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle for Kafka TLS.")

    @field_validator("kafka_bootstrap", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


class BeatSettings(KafkaClientSettings):
    """Options of every beat: event log, SSE and Kafka."""

    data_dir: Path = Field(Path("data"), description="Directory of the event log.")
    retention_count: int | None = Field(
        1_000_000, description="Keep at most this many events in the log (unset: no limit)."
    )
    retention_age: float | None = Field(
        7 * 24 * 3600.0, description="Drop events older than this many seconds (unset: keep)."
    )
    log_sync: Literal["normal", "full"] = Field(
        "normal",
        description="SQLite synchronous mode: normal survives a process crash, "
        "full also survives power loss (slower).",
    )
    log_check: Literal["quick", "full", "off"] = Field(
        "quick",
        description="Integrity check of the event log at start-up: quick (PRAGMA quick_check), "
        "full (integrity_check, slower) or off. A damaged log is refused with advice.",
    )
    sse_queue_size: int = Field(
        1000,
        description="Per-subscriber buffer; a subscriber that overflows it is "
        "disconnected and resumes from the log.",
    )
    sse_queue_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        description="Per-subscriber buffer in bytes of event JSON; a subscriber that overflows it "
        "is disconnected and resumes from the log (one larger event is still delivered).",
    )
    sse_page_bytes: int = Field(
        2**20,
        ge=1024,
        description="Bytes of events per replay page read from the log and per chunk written to "
        "an SSE client (one larger event goes alone).",
    )
    sse_heartbeat: float = Field(15.0, description="Seconds between SSE heartbeat comments.")
    sse_send_timeout: float = Field(
        30.0, description="A client that does not take a write for this long is disconnected."
    )
    kafka_idempotence: bool = Field(
        True, description="Idempotent producer (acks=all). Turn off for brokers without it."
    )
    kafka_partitions: int = Field(1, ge=1, description="Partitions of topics the beat creates.")
    kafka_replication: int = Field(
        1, ge=1, description="Replication factor of topics the beat creates."
    )
    kafka_batch: int = Field(500, ge=1, description="Events per forwarder batch.")
    kafka_batch_bytes: int = Field(
        4 * 2**20,
        ge=1024,
        description="Bytes of events per forwarder batch (at least one event).",
    )
    kafka_max_request_size: int = Field(
        2**20,
        ge=65536,
        description="Largest record the producer sends (Kafka's max.request.size; keep it within "
        "the broker's message.max.bytes). A larger event is produced as a small stand-in record "
        "(its attributes, no data, 'oversize' = its size), logged and counted; the full event "
        "stays on SSE.",
    )
