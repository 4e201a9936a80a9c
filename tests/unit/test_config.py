"""Config loading: every problem named by file, line and key path, all reported at once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError

VALID = """\
[mail]
from = "Digest <digest@lab.example>"

[web]
base_url = "https://digest.lab.example"
secret_env = "PP_SECRET"

[[sources]]
name = "arxiv"
kind = "arxiv-rss"
url = "https://rss.arxiv.org/rss/cs.LG"

[[subscribers]]
email = "ada@lab.example"
timezone = "Europe/London"
[subscribers.interests]
query = "ti:diffusion"
"""

ENV = {"PP_SECRET": "a-long-enough-secret-value"}

SECOND_SUBSCRIBER = '\n[[subscribers]]\nemail = "grace@lab.example"\n'


def write(tmp_path: Path, text: str, name: str = "paperpost.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(str(path))) as info:
        load_config(path, env=ENV if env is None else env)
    return info.value.problems


def strip_location(problem: str) -> str:
    """'/tmp/x/paperpost.toml:14: subscribers[0].timezone: ...' -> 'subscribers[0].timezone: ...'"""
    return re.sub(r"^\S+?\.toml(:\d+)?: ", "", problem)


def test_valid_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env=ENV)
    [sub] = config.subscribers()
    assert sub.email == "ada@lab.example"
    assert sub.schedule.timezone == "Europe/London"
    assert sub.profile.query == "ti:diffusion"
    assert config.secrets.link_keys == ("a-long-enough-secret-value",)
    assert "a-long-enough" not in repr(config.secrets)
    assert config.database_url == f"sqlite:///{tmp_path / 'var' / 'paperpost.db'}"


CASES = [
    (
        "missing-from",
        lambda t: t.replace('from = "Digest <digest@lab.example>"\n', ""),
        "mail.from: required key is missing",
    ),
    (
        "bad-timezone",
        lambda t: t.replace('"Europe/London"', '"Mars/Olympus_Mons"'),
        "subscribers[0].timezone: expected an IANA time zone such as 'Europe/London', "
        "found 'Mars/Olympus_Mons'",
    ),
    (
        "bad-email",
        lambda t: t.replace('"ada@lab.example"', '"ada-at-lab.example"'),
        "subscribers[0].email: not a valid email address (An email address must have an @-sign.), "
        "found 'ada-at-lab.example'",
    ),
    (
        "unknown-source-kind",
        lambda t: t.replace('kind = "arxiv-rss"', 'kind = "atom"'),
        "sources[0].kind: expected one of arxiv-rss, arxiv-api, hf-daily, feed, found 'atom'",
    ),
    (
        "duplicate-subscriber",
        lambda t: t + '\n[[subscribers]]\nemail = "ADA@lab.example"\n',
        "subscribers[1].email: duplicate subscriber 'ADA@lab.example' "
        "(first listed as subscribers[0])",
    ),
    (
        "duplicate-source",
        lambda t: t.replace(
            "[[subscribers]]",
            '[[sources]]\nname = "arxiv"\nkind = "feed"\nurl = "https://x.example/rss"\n\n'
            "[[subscribers]]",
            1,
        ),
        "sources[1].name: duplicate source name 'arxiv' (first used by sources[0])",
    ),
    (
        "bad-frequency",
        lambda t: t.replace(
            'timezone = "Europe/London"', 'timezone = "UTC"\nfrequency = "fortnightly"'
        ),
        "subscribers[0].frequency: frequency 'fortnightly' is not understood; expected 'daily', "
        "'weekdays', 'weekly:mon' ... 'weekly:sun', or a cron expression such as "
        "'cron:0 8 * * 1-5'",
    ),
    (
        "bad-cron",
        lambda t: t.replace('timezone = "Europe/London"', 'frequency = "cron:61 * * * *"'),
        "subscribers[0].frequency: cron '61 * * * *': minute 61 is out of range 0-59",
    ),
    (
        "bad-send-at",
        lambda t: t.replace('timezone = "Europe/London"', 'send_at = "25:00"'),
        "subscribers[0].send_at: expected a 24-hour local time 'HH:MM', found '25:00'",
    ),
    (
        "unknown-key",
        lambda t: t.replace('timezone = "Europe/London"', 'timezoen = "Europe/London"'),
        "subscribers[0].timezoen: unknown key (check the spelling against config/example.toml)",
    ),
    (
        "max-items-zero",
        lambda t: t.replace('timezone = "Europe/London"', "max_items = 0"),
        "subscribers[0].max_items: Input should be greater than or equal to 1, found 0",
    ),
    (
        "max-items-wrong-type",
        lambda t: t.replace('timezone = "Europe/London"', 'max_items = "ten"'),
        "subscribers[0].max_items: Input should be a valid integer, unable to parse string as "
        "an integer, found 'ten'",
    ),
    (
        "secret-env-unset",
        lambda t: t.replace('"PP_SECRET"', '"PP_MISSING_SECRET"'),
        "web.secret_env: environment variable PP_MISSING_SECRET is not set (it holds a secret)",
    ),
    (
        "smtp-password-env-unset",
        lambda t: t.replace(
            "\n[web]",
            'transport = "smtp"\n[mail.smtp]\nhost = "smtp.lab.example"\nusername = "d"\n'
            'password_env = "PP_SMTP_PASSWORD"\n\n[web]',
        ),
        "mail.smtp.password_env: environment variable PP_SMTP_PASSWORD is not set "
        "(it holds a secret)",
    ),
    (
        "smtp-without-table",
        lambda t: t.replace("\n[web]", 'transport = "smtp"\n\n[web]'),
        "mail: transport is 'smtp' but there is no [mail.smtp] table",
    ),
    (
        "plain-smtp-to-remote-host",
        lambda t: t.replace(
            "\n[web]", '[mail.smtp]\nhost = "smtp.lab.example"\nsecurity = "none"\n\n[web]'
        ),
        "mail.smtp: security 'none' is only allowed to a loopback host, found host "
        "'smtp.lab.example'",
    ),
    (
        "base-url-not-http",
        lambda t: t.replace('"https://digest.lab.example"', '"ftp://digest.lab.example"'),
        "web.base_url: expected an http:// or https:// URL, found 'ftp://digest.lab.example'",
    ),
    (
        "base-url-plain-http-to-remote-host",
        lambda t: t.replace('"https://digest.lab.example"', '"http://digest.lab.example"'),
        "web: base_url 'http://digest.lab.example' is not https://: digests would lose the "
        "one-click List-Unsubscribe-Post header (RFC 8058 needs https; Gmail and Yahoo require "
        "it of bulk senders), and readers' unsubscribe and feedback links would travel in "
        "clear text; use https://, or set allow_insecure_links = true for local testing only",
    ),
    (
        "bad-source-url-scheme",
        lambda t: t.replace('"https://rss.arxiv.org/rss/cs.LG"', '"gopher://rss.arxiv.org/"'),
        "sources[0].url: expected an http(s):// URL or a local path, found 'gopher://rss.arxiv.org/'",
    ),
    (
        "bad-like-id",
        lambda t: t + 'like = ["2305.18290", "not-an-id"]\n',
        "subscribers[0].interests.like[1]: expected an arXiv id such as '2305.18290', "
        "found 'not-an-id'",
    ),
    (
        "query-syntax",
        lambda t: t.replace('query = "ti:diffusion"', 'query = "ti:(diffusion"'),
        "subscribers[0].interests.query: invalid query: expected ')' to close the '(' at column 4, "
        "found the end of the query\n  ti:(diffusion\n               ^",
    ),
    (
        "name-with-line-break",
        lambda t: t.replace(
            'timezone = "Europe/London"', 'name = "Eve\\r\\nBcc: victim@x.example"'
        ),
        "subscribers[0].name: not usable in an email header: control characters, line breaks "
        "and '=?...?=' are refused (value 'Eve\\r\\nBcc: victim@x.example' contains control "
        "character U+000D at offset 3), found 'Eve\\r\\nBcc: victim@x.example'",
    ),
    (
        "name-with-encoded-word",
        lambda t: t.replace('timezone = "Europe/London"', 'name = "=?utf-8?q?Admin?="'),
        "subscribers[0].name: not usable in an email header: control characters, line breaks "
        "and '=?...?=' are refused (value '=?utf-8?q?Admin?=' contains an RFC 2047 "
        "encoded-word sequence ('=?...?=')), found '=?utf-8?q?Admin?='",
    ),
    (
        "non-ascii-local-part",
        lambda t: t.replace('"ada@lab.example"', '"zoë@lab.example"'),
        "subscribers[0].email: not a valid email address (Internationalized characters before "
        "the @-sign are not supported: 'ë'.), found 'zoë@lab.example'",
    ),
    (
        "smtp-username-without-password",
        lambda t: t.replace(
            "\n[web]", '[mail.smtp]\nhost = "smtp.lab.example"\nusername = "d"\n\n[web]'
        ),
        "mail.smtp: username is set but password_env (the password's variable) is missing",
    ),
    (
        "negative-render-processes",
        lambda t: t.replace("[mail]\n", "[mail]\nrender_processes = -1\n", 1),
        "mail.render_processes: Input should be greater than or equal to 0, found -1",
    ),
    (
        "negative-trending",
        lambda t: t.replace('timezone = "Europe/London"', "trending = -1"),
        "subscribers[0].trending: Input should be greater than or equal to 0, found -1",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_names_key_and_problem(tmp_path: Path, mutate, expected: str) -> None:
    problems = problems_of(tmp_path, mutate(VALID))
    assert [strip_location(p) for p in problems] == [expected]


def test_problem_carries_file_and_line(tmp_path: Path) -> None:
    text = VALID.replace('"Europe/London"', '"Nowhere/Special"')
    [problem] = problems_of(tmp_path, text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "Nowhere" in ln)
    assert problem.startswith(f"{tmp_path / 'paperpost.toml'}:{line}: subscribers[0].timezone:")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = VALID.replace('"Europe/London"', '"Nowhere/Special"').replace(
        'kind = "arxiv-rss"', 'kind = "x"'
    ) + SECOND_SUBSCRIBER.replace("grace@lab.example", "broken")
    problems = [strip_location(p).split(":")[0] for p in problems_of(tmp_path, text)]
    assert sorted(problems) == [
        "sources[0].kind",
        "subscribers[0].timezone",
        "subscribers[1].email",
    ]


def test_included_subscribers_are_located_in_their_own_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        '[[subscribers]]\nemail = "ok@lab.example"\n\n[[subscribers]]\n'
        'email = "bob@lab.example"\ntimezone = "Atlantis/Lost"\n',
        name="people.toml",
    )
    main = write(tmp_path, 'include = ["people.toml"]\n' + VALID)
    with pytest.raises(ConfigError, match="Atlantis") as info:
        load_config(main, env=ENV)
    [problem] = info.value.problems
    assert problem.startswith(f"{tmp_path / 'people.toml'}:6: subscribers[2].timezone:")


def test_included_subscribers_join_the_config(tmp_path: Path) -> None:
    write(tmp_path, '[[subscribers]]\nemail = "grace@lab.example"\n', name="people.toml")
    config = load_config(write(tmp_path, 'include = ["people.toml"]\n' + VALID), env=ENV)
    assert [s.email for s in config.subscribers()] == ["ada@lab.example", "grace@lab.example"]


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "\nthis is not toml\n")
    with pytest.raises(
        ConfigError, match=r"paperpost\.toml: 1 problem:\n  - not valid TOML: "
    ) as info:
        load_config(path, env=ENV)
    assert "line 19" in info.value.problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: 1 problem:\n  - file not found"):
        load_config(tmp_path / "nope.toml", env=ENV)


def test_secret_file_is_created_once_with_private_mode(tmp_path: Path) -> None:
    text = VALID.replace('secret_env = "PP_SECRET"', 'secret_file = "keys/link.key"')
    first = load_config(write(tmp_path, text), env={})
    key_file = tmp_path / "keys" / "link.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    second = load_config(tmp_path / "paperpost.toml", env={})
    assert first.secrets.link_keys == second.secrets.link_keys
    assert len(first.secrets.link_keys[0]) >= 32


def test_rotation_keys_in_order(tmp_path: Path) -> None:
    text = VALID.replace('secret_env = "PP_SECRET"', 'secret_env = ["PP_NEW", "PP_OLD"]')
    config = load_config(write(tmp_path, text), env={"PP_NEW": "n" * 20, "PP_OLD": "o" * 20})
    assert config.secrets.link_keys == ("n" * 20, "o" * 20)


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    demo = load_config(root / "config" / "demo.toml", env={})
    assert len(demo.subscribers()) >= 6
    example = load_config(
        root / "config" / "example.toml",
        env={
            "PAPERPOST_SMTP_PASSWORD": "x",
            "PAPERPOST_SECRET": "s" * 20,
            "PAPERPOST_SECRET_OLD": "t" * 20,
            "PAPERPOST_ADMIN_TOKEN": "a" * 20,
        },
    )
    assert example.file.mail.transport == "smtp"
