"""The ``paperpost`` command line.

Every command loads the config, does its work through pipeline.cycle or the store, and
prints a short human report. One catch-all turns any PaperpostError into a message that
shows its cause chain and exit status 1; a bug still prints a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.config import Config, load_config
from pipeline.errors import PaperpostError

DEFAULT_CONFIG = "config/paperpost.toml"


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("PAPERPOST_CONFIG") or DEFAULT_CONFIG)


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _short(path: object) -> str:
    """A path relative to the working directory when it lies below it (shorter tables)."""
    text = str(path)
    try:
        return str(Path(text).relative_to(Path.cwd()))
    except ValueError:
        return text


def _table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- commands ----------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    from pipeline.cycle.compose import make_renderer

    make_renderer(config).check()
    f = config.file
    print(f"{config.path}: OK")
    print(f"database: {config.database_url}")
    transport = f.mail.transport
    where = (
        config.maildir
        if transport == "maildir"
        else f"{f.mail.smtp.host}:{f.mail.smtp.port}"
        if f.mail.smtp
        else "?"
    )
    print(f"mail: {transport} -> {where}, from {f.mail.from_}")
    print(f"web: {f.web.base_url}")
    from pipeline.cycle.plan import check_embedding_model

    print(f"match: {check_embedding_model(config)}")
    print()
    print(
        _table(
            [(s.name, s.kind, s.url, "yes" if s.enabled else "no") for s in f.sources],
            ("source", "kind", "url", "enabled"),
        )
    )
    print()
    print(
        _table(
            [
                (
                    s.email,
                    s.timezone,
                    s.frequency,
                    s.send_at,
                    s.max_items,
                    ", ".join(s.interests.categories) or "-",
                )
                for s in f.subscribers
            ],
            ("subscriber", "timezone", "frequency", "send_at", "max", "categories"),
        )
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from pipeline.store import Store, migrate

    config = _load(args)
    store = Store.open(config.database_url, auto_upgrade=True)
    print(f"database at revision {migrate.current_revision(store.engine)} (head)")
    store.close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.cycle import run_once

    config = _load(args)
    report = asyncio.run(run_once(config, write_previews=args.previews))
    failed = [o for o in report.sources if not o.ok]
    print(
        f"ingested {len(report.sources)} sources"
        + (f" ({len(failed)} failed: {', '.join(o.name for o in failed)})" if failed else "")
    )
    d = report.deliver
    if not report.plan.planned and not d.sent:
        print(
            "nothing new to deliver: every due digest was already sent "
            f"({report.plan.skipped_empty} empty periods skipped)"
        )
    else:
        rows = []
        for email, reply in sorted(d.delivered.items()):
            preview = d.previews.get(email)
            rows.append(
                (email, report.plan.items.get(email, "?"), _short(reply), _short(preview or "-"))
            )
        print(
            f"delivered {d.sent} digests"
            + (f", {d.deferred} deferred" if d.deferred else "")
            + (f", {d.failed} failed" if d.failed else "")
            + (f", {d.ambiguous} ambiguous" if d.ambiguous else "")
        )
        print(_table(rows, ("subscriber", "papers", "delivered to", "HTML preview")))
    if config.file.mail.transport == "maildir":
        print(
            f"\nMaildir: {_short(config.maildir)}/\n"
            f"  (open it with any mail client, e.g. mutt -f {_short(config.maildir)})"
        )
    if args.previews:
        print(f"HTML previews: {_short(config.preview_dir)}/")
    if d.aborted:
        print(f"delivery aborted: {d.aborted}", file=sys.stderr)
        return 1
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.cycle import ingest, open_store, sync, utc_now

    config = _load(args)
    store = open_store(config)
    try:
        now = utc_now()
        sync(store, config, now=now)
        outcomes = asyncio.run(ingest(store, config, now=now))
    finally:
        store.close()
    print(
        _table(
            [
                (o.name, "ok" if o.ok else "FAILED", o.entries, o.new, o.updated, o.error or "")
                for o in outcomes
            ],
            ("source", "result", "entries", "new", "updated", "error"),
        )
    )
    return 0 if all(o.ok for o in outcomes) else 1


def cmd_preview(args: argparse.Namespace) -> int:
    from pipeline.cycle import open_store, preview, utc_now

    config = _load(args)
    store = open_store(config)
    try:
        path = preview(config, store, args.email, now=utc_now())
    except KeyError:
        print(f"no subscriber {args.email!r} in {config.path}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(path)
    if args.open:
        import webbrowser

        webbrowser.open(path.as_uri())
    return 0


def cmd_resubscribe(args: argparse.Namespace) -> int:
    from pipeline.cycle import open_store, utc_now

    config = _load(args)
    store = open_store(config)
    try:
        changed = store.resubscribe(args.email.strip().lower(), now=utc_now())
    finally:
        store.close()
    print(
        f"{args.email}: " + ("resubscribed" if changed else "was not unsubscribed; nothing changed")
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pipeline.cycle import open_store, utc_now
    from pipeline.schedule.periods import next_due_period

    config = _load(args)
    store = open_store(config)
    now = utc_now()
    try:
        alert = config.file.ingest.alert_after_failures
        states = {s.name: s for s in store.source_states()}
        rows = []
        for src in config.sources:
            st = states.get(src.name)
            fails = st.consecutive_failures if st else 0
            rows.append(
                (
                    src.name,
                    src.kind,
                    st.last_success.isoformat(timespec="minutes")
                    if st and st.last_success
                    else "never",
                    f"{fails}{' ALERT' if fails >= alert else ''}",
                    st.entries_seen if st else 0,
                    (st.last_error or "")[:60] if st else "",
                )
            )
        print(_table(rows, ("source", "kind", "last success", "failures", "entries", "last error")))
        print()
        subs = store.subscriber_states()
        upcoming = sorted(
            (
                next_due_period(s.schedule, now).due_at,
                s.email,
                subs[s.email].status if s.email in subs else "new",
            )
            for s in config.subscribers()
        )
        print(
            _table(
                [
                    (due.isoformat(timespec="minutes"), email, status)
                    for due, email, status in upcoming[:20]
                ],
                ("next due (UTC)", "subscriber", "status"),
            )
        )
        print()
        counts = store.outbox_counts()
        print("outbox: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty"))
        for run in store.last_runs(4):
            print(
                f"{run.kind} at {run.started_at.isoformat(timespec='seconds')}: "
                f"{_run_summary(run.kind, run.summary)}"
            )
    finally:
        store.close()
    return 0


def _run_summary(kind: str, summary: dict[str, Any]) -> str:
    if kind == "ingest":
        failed = sorted(name for name, r in summary.items() if not r.get("ok"))
        new = sum(int(r.get("new") or 0) for r in summary.values())
        text = f"{len(summary)} sources, {new} new papers"
        return text + (f", failed: {', '.join(failed)}" if failed else "")
    return ", ".join(f"{k} {v}" for k, v in summary.items())


def cmd_explain(args: argparse.Namespace) -> int:
    from pipeline.cycle import open_store, utc_now
    from pipeline.cycle.plan import fit_matcher, profile_with_feedback

    config = _load(args)
    email = args.email.strip().lower()
    sub = next((s for s in config.subscribers() if s.email == email), None)
    if sub is None:
        print(f"no subscriber {args.email!r} in {config.path}", file=sys.stderr)
        return 1
    store = open_store(config)
    try:
        paper_id = args.paper.removeprefix("arXiv:")
        papers = store.papers_by_id([paper_id])
        if paper_id not in papers:
            print(
                f"paper {args.paper!r} is not in the database (run `paperpost ingest`)",
                file=sys.stderr,
            )
            return 1
        state = store.subscriber_state(email)
        profile = sub.profile
        if state is not None:
            profile = profile_with_feedback(profile, *store.feedback([state.id])[state.id])
        now = utc_now()
        matcher = fit_matcher(store, config, now=now, fallback=list(papers.values()))
        liked = store.papers_by_id([*profile.like, *profile.dislike])
        print(matcher.explain(profile, papers[paper_id], liked=liked))
        if paper_id in store.sent_paper_ids(email):
            print("note: this paper was already sent to this subscriber; it will not be sent again")
    finally:
        store.close()
    return 0


def cmd_send_test(args: argparse.Namespace) -> int:
    from pipeline.cycle.sendtest import send_test

    config = _load(args)
    reply = asyncio.run(send_test(config, args.email))
    print(f"server answered: {reply}")
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from pipeline.daemon import run_daemon

    return run_daemon(_config_path(args))


def cmd_reload(args: argparse.Namespace) -> int:
    from pipeline.daemon import signal_reload

    return signal_reload(_config_path(args))


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paperpost", description="Personalised email digests of new research papers."
    )
    parser.add_argument("--version", action="version", version=f"paperpost {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        help=f"config file (default: $PAPERPOST_CONFIG or {DEFAULT_CONFIG})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every event")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: object, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    check = add("check", cmd_check, "validate the config (and templates) and summarise it")
    check.add_argument("config_file", nargs="?", type=Path, help="config file to check")
    run = add("run", cmd_run, "run one full cycle now: ingest, match, render, deliver")
    run.add_argument(
        "--once",
        action="store_true",
        required=True,
        help="one cycle, then exit (use `paperpost daemon` to keep running)",
    )
    run.add_argument(
        "--previews",
        action="store_true",
        help="also write each delivered digest's HTML to [render] preview_dir",
    )
    add("ingest", cmd_ingest, "fetch every source now and store new papers")
    preview = add(
        "preview", cmd_preview, "render EMAIL's next digest to an HTML file, send nothing"
    )
    preview.add_argument("email")
    preview.add_argument("--open", action="store_true", help="open the file in a web browser")
    explain = add("explain", cmd_explain, "show why PAPER ranks where it does for EMAIL")
    explain.add_argument("email")
    explain.add_argument("paper", help="arXiv id such as 2305.18290")
    add("status", cmd_status, "sources and their health, next due digests, outbox counts")
    test = add("send-test", cmd_send_test, "send one test digest to EMAIL and show the reply")
    test.add_argument("email")
    resub = add("resubscribe", cmd_resubscribe, "lift EMAIL's unsubscribe (explicit operator act)")
    resub.add_argument("email")
    add("daemon", cmd_daemon, "run the scheduler and web endpoints until stopped")
    add("reload", cmd_reload, "tell the running daemon to reload its config (SIGHUP)")
    db = add("db", lambda _a: 0, "database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = db_sub.add_parser("upgrade", help="apply Alembic migrations up to the newest")
    up.set_defaults(func=cmd_db_upgrade)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    from pipeline.logs import configure_logging

    configure_logging(verbose=args.verbose, json_lines=args.log_json)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "config_file", None):
        args.config = args.config_file
    _setup_logging(args)
    try:
        result: int = args.func(args)
        return result
    except PaperpostError as exc:
        print(f"paperpost: error: {exc}", file=sys.stderr)
        cause = exc.__cause__
        while cause is not None:
            print(f"  caused by: {type(cause).__name__}: {cause}", file=sys.stderr)
            cause = cause.__cause__
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
