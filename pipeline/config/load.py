"""Load, merge and validate the TOML configuration, reporting every problem at once."""

from __future__ import annotations

import os
import re
import secrets as secrets_module
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from pipeline.config.locate import key_lines, line_for
from pipeline.config.models import MAX_DISPLAY_NAME, ConfigFile, SourceConfig, SubscriberConfig
from pipeline.domain import Profile, Schedule, Subscriber
from pipeline.errors import ConfigError, EmbeddingError

KeyPath = tuple[str | int, ...]
_ARXIV_ID = re.compile(r"^(\d{4}\.\d{4,5}|[a-z-]+(\.[A-Z]{2})?/\d{7})(v\d+)?$")


@dataclass(frozen=True)
class Secrets:
    smtp_password: str | None
    link_keys: tuple[str, ...]  # the first signs new links; all are accepted
    admin_token: str | None
    imap_password: str | None = None  # [bounces.imap] password_env

    def __repr__(self) -> str:  # never print secrets by accident
        return "Secrets(<redacted>)"


@dataclass(frozen=True)
class Config:
    """A validated configuration with paths resolved and secrets read."""

    path: Path
    file: ConfigFile
    secrets: Secrets
    database_url: str
    maildir: Path
    preview_dir: Path
    template_dir: Path | None
    # [match] embedding_model with a relative path resolved (a package name as written)
    embedding_model: str | None = None
    # [mail.dkim] key_file resolved against the config's folder (checked at load)
    dkim_key_file: Path | None = None

    @property
    def sources(self) -> list[SourceConfig]:
        return list(self.file.sources)

    def source_location(self, source: SourceConfig) -> str:
        """The source URL, with relative local paths resolved against the config's folder."""
        return resolve_location(source.url, self.path.parent)

    def subscribers(self) -> list[Subscriber]:
        return [to_subscriber(s) for s in self.file.subscribers]


def to_subscriber(sub: SubscriberConfig) -> Subscriber:
    interests = sub.interests
    profile = Profile(
        query=interests.query or None,
        categories=tuple(interests.categories),
        authors=tuple(interests.authors),
        about=interests.about or None,
        like=tuple(_strip_version(i) for i in interests.like),
        exclude=interests.exclude or None,
        max_items=sub.max_items,
        min_score=interests.min_score,
        trending=sub.trending,
    )
    schedule = Schedule(frequency=sub.frequency, send_at=sub.send_at_time(), timezone=sub.timezone)
    return Subscriber(
        email=sub.email, name=sub.name, schedule=schedule, profile=profile, on_empty=sub.on_empty
    )


def _strip_version(arxiv_id: str) -> str:
    return re.sub(r"v\d+$", "", arxiv_id.strip().removeprefix("arXiv:").removeprefix("arxiv:"))


def resolve_location(url: str, base: Path) -> str:
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
        return url
    path = Path(url)
    return str(path if path.is_absolute() else (base / path).resolve())


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class _Problems:
    """Collects problems, each placed at a file and line where possible."""

    def __init__(self, origins: Mapping[KeyPath, tuple[Path, KeyPath]], main: Path) -> None:
        self.items: list[str] = []
        self._origins = origins
        self._main = main
        self._lines: dict[Path, dict[KeyPath, int]] = {}

    def add(self, path: KeyPath, message: str) -> None:
        file, local = self._locate(path)
        lines = self._lines.setdefault(file, _lines_of(file))
        line = line_for(lines, local)
        where = f"{file}:{line}" if line else str(file)
        self.items.append(f"{where}: {format_path(path)}: {message}")

    def _locate(self, path: KeyPath) -> tuple[Path, KeyPath]:
        if len(path) >= 2 and (path[0], path[1]) in self._origins:
            file, local_prefix = self._origins[(path[0], path[1])]
            return file, (*local_prefix, *path[2:])
        return self._main, path


def _lines_of(file: Path) -> dict[KeyPath, int]:
    try:
        return key_lines(file.read_text(encoding="utf-8"))
    except OSError:
        return {}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(str(path), ["file not found"]) from exc
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from exc


def _merge_includes(
    main: Path, data: dict[str, Any]
) -> tuple[dict[str, Any], dict[KeyPath, tuple[Path, KeyPath]], list[str]]:
    """Append the sources and subscribers of included files, remembering where each came from."""
    origins: dict[KeyPath, tuple[Path, KeyPath]] = {}
    problems: list[str] = []
    merged = dict(data)
    for key in ("sources", "subscribers"):
        entries = merged.get(key, [])
        if isinstance(entries, list):
            for i in range(len(entries)):
                origins[(key, i)] = (main, (key, i))
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        return merged, origins, [f"{main}: include: expected a list of file names"]
    for name in includes:
        inc_path = (main.parent / str(name)).resolve()
        try:
            inc = _read_toml(inc_path)
        except ConfigError as exc:
            problems.append(f"{main}: include: {inc_path}: {exc.problems[0]}")
            continue
        for key, value in inc.items():
            if key not in ("sources", "subscribers") or not isinstance(value, list):
                problems.append(
                    f"{inc_path}: {key}: an included file may only hold [[sources]] and "
                    f"[[subscribers]] tables"
                )
                continue
            target = merged.setdefault(key, [])
            if not isinstance(target, list):
                continue
            for local_index, entry in enumerate(value):
                origins[(key, len(target))] = (inc_path, (key, local_index))
                target.append(entry)
    return merged, origins, problems


def pydantic_message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    found = err.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling against config/example.toml)"
    message = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if "found" not in message and not isinstance(found, dict | list):
        message += f", found {found!r}"
    return message


class Problems(Protocol):
    items: list[str]

    def add(self, path: KeyPath, message: str) -> None: ...


def semantic_checks(data: Mapping[str, Any], problems: Problems) -> None:
    """Checks across entries that field validators cannot make on their own."""
    from pipeline.match.query import validate_query
    from pipeline.schedule.periods import parse_frequency as validate_frequency

    seen_sources: dict[str, int] = {}
    for i, src in enumerate(data.get("sources") or []):
        if isinstance(src, dict) and isinstance(src.get("name"), str):
            if src["name"] in seen_sources:
                problems.add(
                    ("sources", i, "name"),
                    f"duplicate source name {src['name']!r} (first used by "
                    f"sources[{seen_sources[src['name']]}])",
                )
            else:
                seen_sources[src["name"]] = i
    seen_emails: dict[str, int] = {}
    for i, sub in enumerate(data.get("subscribers") or []):
        if not isinstance(sub, dict):
            continue
        email = sub.get("email")
        if isinstance(email, str):
            key = email.strip().lower()
            if key in seen_emails:
                problems.add(
                    ("subscribers", i, "email"),
                    f"duplicate subscriber {email!r} "
                    f"(first listed as subscribers[{seen_emails[key]}])",
                )
            else:
                seen_emails[key] = i
            _check_local_part(problems, i, email)
        name = sub.get("name")
        if isinstance(name, str) and len(name.strip()) > MAX_DISPLAY_NAME:
            problems.add(
                ("subscribers", i, "name"),
                f"subscriber {_who(email)}: the name is {len(name.strip())} characters; at most "
                f"{MAX_DISPLAY_NAME} are allowed (it goes into the To: header)",
            )
        frequency = sub.get("frequency")
        if isinstance(frequency, str):
            try:
                validate_frequency(frequency)
            except ValueError as exc:
                problems.add(("subscribers", i, "frequency"), str(exc))
        interests = sub.get("interests")
        if not isinstance(interests, dict):
            continue
        for field in ("query", "exclude"):
            text = interests.get(field)
            if isinstance(text, str) and text.strip():
                try:
                    validate_query(text)
                except ValueError as exc:
                    problems.add(("subscribers", i, "interests", field), str(exc))
        for j, liked in enumerate(interests.get("like") or []):
            if isinstance(liked, str) and not _ARXIV_ID.match(_strip_version(liked)):
                problems.add(
                    ("subscribers", i, "interests", "like", j),
                    f"expected an arXiv id such as '2305.18290', found {liked!r}",
                )


def longest_link_seconds() -> int:
    """The lifetime of the longest-lived digest link (unsubscribe and manage links)."""
    from pipeline.web import tokens

    return max(tokens.UNSUBSCRIBE_MAX_AGE_SECONDS, tokens.DEFAULT_MAX_AGE_SECONDS)


def retention_problems(cfg: ConfigFile) -> list[tuple[KeyPath, str]]:
    """``[database] retention_days``: longer than the longest digest link (a feedback or
    manage link names its outbox row, which must outlive it) and not shorter than the
    bounce windows (``[bounces] rate_days``, ``soft_bounce_days``), which read that much
    history."""
    days = cfg.database.retention_days
    where: KeyPath = ("database", "retention_days")
    link_days = longest_link_seconds() // 86400
    minimum = link_days + 1
    if days * 86400 <= longest_link_seconds():
        return [
            (
                where,
                f"must be at least {minimum} (days), found {days}: digest links (unsubscribe "
                f"and manage) live {link_days} days and name their outbox row, which must "
                "outlive them; 0 (keep for ever) is not allowed",
            )
        ]
    if cfg.bounces is not None:
        windows = {
            "rate_days": cfg.bounces.rate_days,
            "soft_bounce_days": cfg.bounces.soft_bounce_days,
        }
        for key, value in windows.items():
            if days < value:
                return [
                    (
                        where,
                        f"must be at least [bounces] {key} ({value}), found {days}: the "
                        "bounce rules read that many days of bounce events",
                    )
                ]
    return []


def _check_local_part(problems: Problems, index: int, email: str) -> None:
    """RFC 5321 caps a local part at 64 octets; servers refuse longer ones at RCPT."""
    from pipeline.mail.headers import MAX_LOCAL_PART

    local = email.strip().rpartition("@")[0]
    size = len(local.encode("utf-8"))
    if size > MAX_LOCAL_PART:
        problems.add(
            ("subscribers", index, "email"),
            f"subscriber {_who(email)}: the part before '@' is {size} octets; RFC 5321 "
            f"allows at most {MAX_LOCAL_PART} and mail servers refuse longer ones",
        )


def _who(email: object) -> str:
    if not isinstance(email, str):
        return "(no email)"
    shown = email.strip()
    return repr(shown if len(shown) <= 80 else shown[:77] + "...")


def _env_secret(
    problems: _Problems, path: KeyPath, name: str, env: Mapping[str, str], *, required: bool
) -> str | None:
    value = env.get(name)
    if not value:
        if required:
            problems.add(path, f"environment variable {name} is not set (it holds a secret)")
        return None
    return value


def _read_secrets(
    cfg: ConfigFile, base: Path, problems: _Problems, env: Mapping[str, str], *, required: bool
) -> Secrets:
    smtp_password = None
    if cfg.mail.transport == "smtp" and cfg.mail.smtp and cfg.mail.smtp.password_env:
        smtp_password = _env_secret(
            problems,
            ("mail", "smtp", "password_env"),
            cfg.mail.smtp.password_env,
            env,
            required=required,
        )
    keys: list[str] = []
    names = cfg.web.secret_env
    for name in [names] if isinstance(names, str) else (names or []):
        value = _env_secret(problems, ("web", "secret_env"), name, env, required=required)
        if value:
            if len(value) < 16:
                problems.add(("web", "secret_env"), f"{name} is shorter than 16 characters")
            keys.append(value)
    if not keys and cfg.web.secret_file and (required or (base / cfg.web.secret_file).exists()):
        keys.append(_file_secret(base / cfg.web.secret_file))
    admin = None
    if cfg.web.admin_token_env:
        admin = _env_secret(
            problems, ("web", "admin_token_env"), cfg.web.admin_token_env, env, required=required
        )
    imap = cfg.bounces.imap if cfg.bounces else None
    imap_password = (
        _env_secret(
            problems, ("bounces", "imap", "password_env"), imap.password_env, env, required=required
        )
        if imap
        else None
    )
    return Secrets(
        smtp_password=smtp_password,
        link_keys=tuple(keys),
        admin_token=admin,
        imap_password=imap_password,
    )


def _file_secret(path: Path) -> str:
    """Read a link-signing key from a file, creating it (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets_module.token_urlsafe(32) + "\n")
    return path.read_text(encoding="utf-8").strip()


def _resolve_db_url(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base / url[len(prefix) :]).resolve())
    return url


def load_config(
    path: str | Path, *, env: Mapping[str, str] | None = None, secrets: bool = True
) -> Config:
    """Load and validate ``path``; raise ConfigError listing every problem found.

    ``secrets=False`` is for read-only commands (``status``, ``outbox``, ``explain``,
    ``subscribers list``): secrets that are not set are left out instead of being errors,
    so an operator can look without the SMTP password or the link-signing key.
    """
    main = Path(path).resolve()
    env = os.environ if env is None else env
    data = _read_toml(main)
    merged, origins, include_problems = _merge_includes(main, data)
    problems = _Problems(origins, main)
    problems.items.extend(include_problems)

    cfg: ConfigFile | None = None
    try:
        cfg = ConfigFile.model_validate(merged)
    except ValidationError as exc:
        for err in exc.errors():
            problems.add(tuple(err["loc"]), pydantic_message(err))
    semantic_checks(merged, problems)
    if cfg is not None:
        for key_path, message in retention_problems(cfg):
            problems.add(key_path, message)
    if cfg is None or problems.items:
        raise ConfigError(str(main), problems.items)

    base = main.parent
    read = _read_secrets(cfg, base, problems, env, required=secrets)
    embedding_model = _embedding_model(cfg.match.embedding_model, base, problems)
    dkim_key_file = _dkim_key_file(cfg, base, problems, check=secrets)
    if problems.items:
        raise ConfigError(str(main), problems.items)
    return Config(
        path=main,
        file=cfg,
        secrets=read,
        database_url=_resolve_db_url(cfg.database.url, base),
        maildir=(base / cfg.mail.maildir.path).resolve(),
        preview_dir=(base / cfg.render.preview_dir).resolve(),
        template_dir=(base / cfg.render.template_dir).resolve()
        if cfg.render.template_dir
        else None,
        embedding_model=embedding_model,
        dkim_key_file=dkim_key_file,
    )


def _dkim_key_file(cfg: ConfigFile, base: Path, problems: _Problems, *, check: bool) -> Path | None:
    """The ``[mail.dkim]`` key file, resolved; unless ``check`` is off (read-only commands,
    like the other secrets) it must be readable and hold an RSA or Ed25519 private key."""
    if cfg.mail.dkim is None:
        return None
    path = (base / cfg.mail.dkim.key_file.expanduser()).resolve()
    if check:
        from pipeline.mail.dkim import DkimError, load_key

        try:
            load_key(path)
        except DkimError as exc:
            problems.add(("mail", "dkim", "key_file"), str(exc))
    return path


def _embedding_model(spec: str | None, base: Path, problems: _Problems) -> str | None:
    """The model directory (resolved against the config's folder) or package name, checked
    to exist without importing anything; loading it is ``paperpost check``'s job."""
    if spec is None:
        return None
    from pipeline.match.embedding import is_path_spec, resolve_model_dir

    if is_path_spec(spec):
        spec = str((base / Path(spec).expanduser()).resolve())
    try:
        resolve_model_dir(spec)
    except EmbeddingError as exc:
        problems.add(("match", "embedding_model"), str(exc))
    return spec


def config_error(config: Config, key_path: KeyPath, message: str) -> ConfigError:
    """A problem found after loading (a model that will not open), located like the others."""
    problems = _Problems({}, config.path)
    problems.add(key_path, message)
    return ConfigError(str(config.path), problems.items)
