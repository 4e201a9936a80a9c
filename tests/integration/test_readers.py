"""Readers live in the database: the config's one writer (sync), bulk imports, versions,
and the installation id behind globally unique Message-IDs. SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from pipeline.config.readers import read_subscribers
from pipeline.domain import Profile, Schedule, Subscriber
from pipeline.errors import ConfigError
from pipeline.store import Store

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def reader(email: str, **profile: object) -> Subscriber:
    return Subscriber(
        email=email,
        name=None,
        schedule=Schedule("daily", time(8), "Europe/London"),
        profile=Profile(**profile),  # type: ignore[arg-type]
    )


def test_sync_stores_every_setting_and_reads_it_back_by_id(store: Store) -> None:
    ada = Subscriber(
        email="ada@lab.example",
        name="Ada",
        schedule=Schedule("weekly:mon", time(7, 30), "Asia/Tokyo"),
        profile=Profile(
            query="ti:diffusion",
            categories=("cs.LG", "cs.CL"),
            authors=("Rafael Rafailov",),
            about="alignment",
            like=("2305.18290",),
            exclude="cat:quant-ph",
            max_items=7,
            min_score=0.2,
            trending=3,
        ),
        on_empty="send",
    )
    stats = store.sync_subscribers([ada], now=NOW)
    assert (stats.added, stats.updated, stats.removed) == (1, 0, 0)
    found = store.reader_by_email("ada@lab.example")
    assert found is not None
    assert found.subscriber == ada
    assert (found.version, found.origin, found.status) == (1, "config", "active")
    assert store.readers([found.id])[found.id] == found
    assert store.active_schedules() == {found.id: ada.schedule}


def test_a_change_bumps_the_version_and_no_change_writes_nothing(store: Store) -> None:
    store.sync_subscribers([reader("a@x.example")], now=NOW)
    again = store.sync_subscribers([reader("a@x.example")], now=NOW + timedelta(hours=1))
    assert (again.added, again.updated) == (0, 0)
    first = store.reader_by_email("a@x.example")
    assert first is not None and first.version == 1
    changed = reader("a@x.example", query="ti:transformer")
    stats = store.sync_subscribers([changed], now=NOW + timedelta(hours=2))
    assert stats.updated == 1
    now = store.reader_by_email("a@x.example")
    assert now is not None
    assert (now.id, now.version, now.subscriber.profile.query) == (first.id, 2, "ti:transformer")


def test_removal_touches_only_the_configs_own_readers_and_unsubscribe_wins(store: Store) -> None:
    store.sync_subscribers([reader("a@x.example"), reader("b@x.example")], now=NOW)
    store.import_subscribers([reader("bulk@x.example")], now=NOW)
    assert store.unsubscribe("b@x.example", now=NOW) is True
    stats = store.sync_subscribers([reader("b@x.example")], now=NOW)
    assert stats.removed == 1 and stats.suppressed == 1
    status = {r.email: (r.status, r.origin) for r in store.list_readers()}
    assert status == {
        "a@x.example": ("removed", "config"),
        "b@x.example": ("unsubscribed", "config"),
        "bulk@x.example": ("active", "import"),
    }
    # Back in the config: active again, same id.
    before = store.reader_by_email("a@x.example")
    store.sync_subscribers([reader("a@x.example"), reader("b@x.example")], now=NOW)
    after = store.reader_by_email("a@x.example")
    assert before is not None and after is not None
    assert (after.id, after.status) == (before.id, "active")


def test_an_import_never_takes_over_a_config_reader(store: Store) -> None:
    store.sync_subscribers([reader("a@x.example", query="ti:mine")], now=NOW)
    stats = store.import_subscribers(
        [reader("a@x.example", query="ti:theirs"), reader("new@x.example")], now=NOW
    )
    assert (stats.added, stats.skipped) == (1, 1)
    a = store.reader_by_email("a@x.example")
    assert a is not None and a.subscriber.profile.query == "ti:mine" and a.origin == "config"


def test_the_config_takes_over_an_imported_reader(store: Store) -> None:
    store.import_subscribers([reader("a@x.example")], now=NOW)
    store.sync_subscribers([reader("a@x.example", query="ti:config")], now=NOW)
    a = store.reader_by_email("a@x.example")
    assert a is not None and (a.origin, a.subscriber.profile.query) == ("config", "ti:config")


def test_syncs_running_at_once_all_succeed_and_agree(db_url: str) -> None:
    """Several processes start on a fresh database together: the upsert settles it (this
    raised UniqueViolation uq_subscribers_email on PostgreSQL before)."""
    Store.open(db_url, auto_upgrade=True).close()
    wanted = [reader(f"r{i:03d}@x.example") for i in range(300)]
    stores = [Store.open(db_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def sync(s: Store) -> None:
        barrier.wait()
        try:
            s.sync_subscribers(wanted, now=NOW)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=sync, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        readers = list(stores[0].list_readers())
        assert [r.email for r in readers] == [s.email for s in wanted]
        assert {r.version for r in readers} == {1}
    finally:
        for s in stores:
            s.close()


def test_the_installation_id_is_created_once_and_differs_between_databases(
    tmp_path: Path, db_url: str
) -> None:
    a = Store.open(db_url, auto_upgrade=True)
    b = Store.open(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        first = a.installation_id()
        assert first == a.installation_id()
        assert len(first) == 32
        assert b.installation_id() != first
    finally:
        a.close()
        b.close()


def test_liked_papers_come_from_active_readers(store: Store) -> None:
    store.sync_subscribers(
        [reader("a@x.example", like=("2305.18290",)), reader("b@x.example", like=("2106.09685",))],
        now=NOW,
    )
    store.unsubscribe("b@x.example", now=NOW)
    assert store.liked_paper_ids() == {"2305.18290"}


# -- bulk files ----------------------------------------------------------------------------------
def test_jsonl_records_are_validated_like_config_subscribers(tmp_path: Path) -> None:
    path = tmp_path / "readers.jsonl"
    path.write_text(
        '{"email": "ada@lab.example", "timezone": "Europe/London", "frequency": "weekdays",'
        ' "interests": {"categories": ["cs.LG"], "like": ["2305.18290v2"]}}\n'
        "\n# a comment\n"
        '{"email": "grace@lab.example", "max_items": 5, "trending": 2}\n',
        encoding="utf-8",
    )
    ada, grace = read_subscribers(path)
    assert ada.schedule == Schedule("weekdays", time(8), "Europe/London")
    assert ada.profile.categories == ("cs.LG",) and ada.profile.like == ("2305.18290",)
    assert (grace.profile.max_items, grace.profile.trending) == (5, 2)


def test_csv_columns_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "readers.csv"
    path.write_text(
        "email,name,timezone,send_at,categories,authors,query,max_items\n"
        'ada@lab.example,Ada,Asia/Tokyo,07:15,cs.LG;cs.CL,"Rafailov, R.;Finn, C.",ti:rlhf,9\n'
        "grace@lab.example,,,,,,,\n",
        encoding="utf-8",
    )
    ada, grace = read_subscribers(path)
    assert ada.name == "Ada" and ada.schedule.send_at == time(7, 15)
    assert ada.profile.categories == ("cs.LG", "cs.CL")
    assert ada.profile.authors == ("Rafailov, R.", "Finn, C.")
    assert (ada.profile.query, ada.profile.max_items) == ("ti:rlhf", 9)
    assert grace.schedule == Schedule("daily", time(8), "UTC")


@pytest.mark.parametrize(
    ("name", "text", "problems"),
    [
        (
            "bad.jsonl",
            '{"email": "ok@lab.example"}\n{"email": "nope", "timezone": "Mars/Base"}\n',
            [
                r"bad\.jsonl:2: email: not a valid email address",
                r"bad\.jsonl:2: timezone: expected an IANA time zone",
            ],
        ),
        (
            "broken.jsonl",
            '{"email": "ok@lab.example"}\n{"email": \n',
            [r"broken\.jsonl:2: not a JSON object"],
        ),
        (
            "query.jsonl",
            '{"email": "a@lab.example", "interests": {"query": "ti:(open"}}\n'
            '{"email": "A@lab.example", "frequency": "hourly"}\n',
            [
                r"query\.jsonl:1: interests\.query: ",
                r"query\.jsonl:2: email: duplicate subscriber",
                r"query\.jsonl:2: frequency: ",
            ],
        ),
        (
            "columns.csv",
            "email,colour\na@lab.example,blue\n",
            [r"columns\.csv:1: unknown column\(s\) 'colour'"],
        ),
        (
            "numbers.csv",
            "email,max_items\na@lab.example,lots\n",
            [r"numbers\.csv:2: max_items: expected a number, found 'lots'"],
        ),
        ("readers.txt", "a@lab.example\n", [r"expected a \.csv or \.jsonl"]),
    ],
    ids=["field-errors", "bad-json", "cross-checks", "unknown-column", "bad-number", "suffix"],
)
def test_bad_records_name_file_line_and_key(
    tmp_path: Path, name: str, text: str, problems: list[str]
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=problems[0]) as info:
        read_subscribers(path)
    import re

    message = str(info.value)
    for pattern in problems:
        assert re.search(pattern, message), (pattern, message)


def test_a_reader_record_equals_its_config_twin(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text('{"email": "Ada@Lab.Example", "send_at": "09:00"}\n', encoding="utf-8")
    [ada] = read_subscribers(path)
    # The address is normalised as in the config: the domain lower-cased, the local part kept.
    assert ada == replace(reader("Ada@lab.example"), schedule=Schedule("daily", time(9), "UTC"))
