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
from typing import TYPE_CHECKING, Any

from pipeline import __version__
from pipeline.errors import PaperpostError

if TYPE_CHECKING:  # imported where used: `paperpost --help` loads none of the stages
    from pipeline.app import App
    from pipeline.config import Config

DEFAULT_CONFIG = "config/paperpost.toml"


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("PAPERPOST_CONFIG") or DEFAULT_CONFIG)


def _load(args: argparse.Namespace) -> Config:
    from pipeline.config import load_config

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
def _app(args: argparse.Namespace, *, read_only: bool = False) -> App:
    """The application over the config; read-only commands need none of the secrets."""
    from pipeline.config import load_config

    return _app_for(load_config(_config_path(args), secrets=not read_only))


def _app_for(config: Config) -> App:
    """The application over ``config``, on the simulated clock of ``[testing] clock_file``
    when one is set (testing only, pipeline/clock.py), else on the system clock."""
    from pipeline.app import App, configured_clock

    return App(config, clock=configured_clock(config))


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    with _app_for(config) as app:
        checks = app.check()
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
    for line in checks:
        print(line)
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
    with _app(args, read_only=True) as app:
        print(f"database at revision {app.upgrade_database()} (head)")
        if app.config.file.daemon.runner == "procrastinate":
            from pipeline.runner import apply_schema

            applied = apply_schema(app.config)
            print(f"procrastinate schema {'applied' if applied else 'already present'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.runner import run_worker

    config = _load(args)
    if config.file.daemon.runner != "procrastinate":
        print(
            'paperpost: `worker` needs daemon.runner = "procrastinate" in '
            f"{config.path} (docs/scaling.md)",
            file=sys.stderr,
        )
        return 2
    return run_worker(config, concurrency=args.concurrency, queues=args.queue)


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.app import run_failed
    from pipeline.logs import progress_display

    config = _load(args)
    with _app_for(config) as app, progress_display() as progress:
        report = asyncio.run(app.run_once(write_previews=args.previews, progress=progress))
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
    if run_failed(d):  # every digest it tried failed: a cron job must notice
        print(
            f"paperpost: every due digest failed ({d.failed} failed, {d.deferred} deferred); "
            "see `paperpost outbox --status failed`",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    with _app(args) as app:
        app.sync()
        outcomes = asyncio.run(app.ingest())
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
    with _app(args) as app:
        app.sync()
        upcoming = app.next_digest(args.email)
        path = app.write_preview(upcoming)
    due = upcoming.due_at.isoformat(timespec="minutes")
    if path is None:
        print(
            f"{upcoming.email}: nothing would be sent for {upcoming.period_key} "
            f"(due {due} UTC): {upcoming.nothing}; no preview written"
        )
        return 0
    print(
        f"{upcoming.email}, {upcoming.period_key} (due {due} UTC): {upcoming.papers} papers, "
        f"subject {upcoming.subject!r}",
        file=sys.stderr,
    )
    print(path)
    if args.open:
        import webbrowser

        webbrowser.open(path.as_uri())
    return 0


def cmd_resubscribe(args: argparse.Namespace) -> int:
    with _app(args, read_only=True) as app:
        changed = app.resubscribe(args.email)
    print(
        f"{args.email}: " + ("resubscribed" if changed else "was not unsubscribed; nothing changed")
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _app(args, read_only=True) as app:
        config = app.config
        alert = config.file.ingest.alert_after_failures
        states = {s.name: s for s in app.source_states()}
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
        print(
            _table(
                [(due.isoformat(timespec="minutes"), email) for due, email in app.next_due()],
                ("next due (UTC)", "subscriber"),
            )
        )
        print()
        counts = app.outbox_counts()
        print("outbox: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty"))
        rates = app.bounce_rates()
        print(
            f"last {rates.days} days: {rates.sent} digests sent, "
            f"{rates.bounces} bounces ({_rate(rates.bounce_rate)}), "
            f"{rates.complaints} complaints ({_rate(rates.complaint_rate)})"
        )
        for run in app.last_runs(4):
            print(
                f"{run.kind} at {run.started_at.isoformat(timespec='seconds')}: "
                f"{_run_summary(run.kind, run.summary)}"
            )
        verdict = app.health()  # what /healthz says (docs/daemon.md, "Health")
        print(f"health: {verdict.status}")
        for reason in verdict.reasons:
            print(f"  - {reason}")
    return 0


def _rate(value: float | None) -> str:
    return "no digests sent" if value is None else f"{value:.2%}"


def _run_summary(kind: str, summary: dict[str, Any]) -> str:
    if kind == "ingest":
        failed = sorted(name for name, r in summary.items() if not r.get("ok"))
        new = sum(int(r.get("new") or 0) for r in summary.values())
        text = f"{len(summary)} sources, {new} new papers"
        return text + (f", failed: {', '.join(failed)}" if failed else "")
    return ", ".join(f"{k} {v}" for k, v in summary.items())


def cmd_explain(args: argparse.Namespace) -> int:
    with _app(args, read_only=True) as app:
        print(app.explain(args.email, args.paper))
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    with _app(args, read_only=True) as app:
        entries = app.outbox(
            statuses=args.status or None,
            email=args.subscriber,
            period_key=args.period,
            limit=args.limit,
        )
    print(
        _table(
            [
                (
                    e.id,
                    e.email,
                    e.period_key,
                    e.status,
                    e.attempts,
                    e.item_count,
                    (e.sent_at or e.next_attempt_at).isoformat(timespec="minutes"),
                    (e.last_error or "")[:60],
                )
                for e in entries
            ],
            ("id", "subscriber", "period", "status", "tries", "papers", "sent/next", "last error"),
        )
    )
    if len(entries) == args.limit:
        print(f"(the newest {args.limit}; --limit N shows more)")
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    if not (args.ids or args.subscriber or args.all):
        raise PaperpostError(
            "requeue: name the digests (outbox ids), --subscriber EMAIL, or --all; "
            "see `paperpost outbox --status failed --status ambiguous`"
        )
    with _app(args, read_only=True) as app:
        moved = app.requeue(
            ids=args.ids or None,
            statuses=args.status or ("failed", "ambiguous"),
            email=args.subscriber,
        )
    print(f"{moved} digest(s) back in the queue; the next dispatch tick or run sends them")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    with _app(args, read_only=True) as app:
        report = app.prune(dry_run=args.dry_run)
    counts = report.counts.as_dict()
    verb = "would delete" if report.dry_run else "deleted"
    print(
        f"history older than {report.cutoff.isoformat(timespec='minutes')} "
        f"([database] retention_days = {app.config.file.database.retention_days}): {verb}"
    )
    print(_table([(table, n) for table, n in counts.items()], ("table", "rows")))
    if report.dry_run:
        print("(dry run: nothing was deleted)")
    return 0


def cmd_subscribers_list(args: argparse.Namespace) -> int:
    with _app(args, read_only=True) as app:
        readers = app.readers(statuses=args.status or None, origin=args.origin)
        reasons = app.status_reasons()  # why a reader is suppressed or unsubscribed
    print(
        _table(
            [
                (
                    r.email,
                    r.status,
                    reasons.get(r.email, "") if r.status in ("suppressed", "unsubscribed") else "",
                    r.origin,
                    r.version,
                    r.subscriber.schedule.timezone,
                    r.subscriber.schedule.frequency,
                    r.subscriber.schedule.send_at.strftime("%H:%M"),
                )
                for r in readers
            ],
            (
                "subscriber",
                "status",
                "reason",
                "origin",
                "version",
                "timezone",
                "frequency",
                "send_at",
            ),
        )
    )
    return 0


def cmd_bounces_process(args: argparse.Namespace) -> int:
    with _app(args) as app:
        report = app.process_bounces()
    print(
        f"bounce mailbox: {report.read} read: {report.hard} hard bounces, {report.soft} soft, "
        f"{report.complaints} complaints, {report.unsubscribes} unsubscribes by mail; "
        f"{report.duplicates} already recorded, {report.ignored} with nothing to record, "
        f"{report.malformed} malformed (flagged, see the log)"
    )
    for address in report.suppressed:
        print(f"suppressed: {address}")
    for address in report.unsubscribed:
        print(f"suppressed at their request (may resubscribe): {address}")
    return 0


def cmd_subscribers_import(args: argparse.Namespace) -> int:
    from pipeline.logs import progress_display

    with _app(args, read_only=True) as app, progress_display() as progress:
        stats = app.import_subscribers(args.file, progress=progress)
    print(
        f"{args.file}: {stats.added} added, {stats.updated} updated, "
        f"{stats.skipped} skipped (the config file owns them), "
        f"{stats.suppressed} unsubscribed (kept so)"
    )
    return 0


def cmd_subscribers_unsubscribe(args: argparse.Namespace) -> int:
    with _app(args, read_only=True) as app:
        app.reader(args.email)  # an unknown address is an error, not a new suppression
        changed = app.unsubscribe(args.email, reason="operator")
    print(f"{args.email}: " + ("unsubscribed" if changed else "was not active; nothing changed"))
    return 0


def cmd_send_test(args: argparse.Namespace) -> int:
    with _app(args) as app:
        reply = asyncio.run(app.send_test(args.email, force=args.force))
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
        "preview",
        cmd_preview,
        "render EMAIL's next digest to its own HTML file (EMAIL.next.html), send nothing",
    )
    preview.add_argument("email")
    preview.add_argument("--open", action="store_true", help="open the file in a web browser")
    explain = add("explain", cmd_explain, "show why PAPER ranks where it does for EMAIL")
    explain.add_argument("email")
    explain.add_argument("paper", help="arXiv id such as 2305.18290")
    add("status", cmd_status, "sources and their health, next due digests, outbox counts")
    test = add("send-test", cmd_send_test, "send one test digest to EMAIL and show the reply")
    test.add_argument("email")
    test.add_argument(
        "--force",
        action="store_true",
        help="send even if EMAIL is not a subscriber or has unsubscribed",
    )
    resub = add("resubscribe", cmd_resubscribe, "lift EMAIL's unsubscribe (explicit operator act)")
    resub.add_argument("email")
    outbox = add("outbox", cmd_outbox, "list digests in the outbox by state, subscriber, period")
    outbox.add_argument(
        "--status", action="append", metavar="STATE", help="only this state (repeatable)"
    )
    outbox.add_argument("--subscriber", metavar="EMAIL", help="only this reader's digests")
    outbox.add_argument("--period", metavar="KEY", help="only this period, e.g. 2026-12-02")
    outbox.add_argument("--limit", type=int, default=100, help="at most N rows (default 100)")
    requeue = add(
        "requeue",
        cmd_requeue,
        "put failed or ambiguous digests back in the queue (an ambiguous one may arrive twice)",
    )
    requeue.add_argument("ids", nargs="*", type=int, help="outbox ids (see `paperpost outbox`)")
    requeue.add_argument("--subscriber", metavar="EMAIL", help="this reader's digests")
    requeue.add_argument(
        "--status",
        action="append",
        choices=("failed", "ambiguous"),
        help="only this state (repeatable; default both)",
    )
    requeue.add_argument("--all", action="store_true", help="every failed and ambiguous digest")
    prune = add(
        "prune",
        cmd_prune,
        "delete history older than [database] retention_days (old digests, runs, bounces)",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
    )
    subs = add("subscribers", lambda _a: 0, "list, import or unsubscribe readers")
    subs_sub = subs.add_subparsers(dest="subscribers_command", required=True, metavar="ACTION")
    listing = subs_sub.add_parser("list", help="readers in the database, with status and origin")
    listing.add_argument(
        "--status",
        action="append",
        choices=("active", "pending", "unsubscribed", "suppressed", "removed"),
    )
    listing.add_argument("--origin", choices=("config", "import", "self-service"))
    listing.set_defaults(func=cmd_subscribers_list)
    bulk = subs_sub.add_parser(
        "import", help="add or update readers from a CSV or JSON Lines file (docs/operating.md)"
    )
    bulk.add_argument("file", type=Path)
    bulk.set_defaults(func=cmd_subscribers_import)
    off = subs_sub.add_parser("unsubscribe", help="unsubscribe EMAIL as the operator")
    off.add_argument("email")
    off.set_defaults(func=cmd_subscribers_unsubscribe)
    bounces = add("bounces", lambda _a: 0, "read bounces, complaints and mailed unsubscribes")
    bounces_sub = bounces.add_subparsers(dest="bounces_command", required=True, metavar="ACTION")
    process = bounces_sub.add_parser(
        "process", help="read the bounce mailbox once and suppress what it reports"
    )
    process.set_defaults(func=cmd_bounces_process)
    add("daemon", cmd_daemon, "run the scheduler and web endpoints until stopped")
    add("reload", cmd_reload, "tell the running daemon to reload its config (SIGHUP)")
    work = add("worker", cmd_worker, "run delivery jobs (runner = procrastinate) until stopped")
    work.add_argument(
        "--concurrency", type=int, metavar="N", help="jobs at once (default [worker] concurrency)"
    )
    work.add_argument(
        "--queue", action="append", metavar="NAME", help="queue to serve (default [worker] queue)"
    )
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
    except Exception as exc:
        # A database that refuses the connection (down, wrong role, wrong password) is an
        # operator's problem to fix, not a traceback to read; the driver's own words say why.
        if type(exc).__module__ == "sqlalchemy.exc" and type(exc).__name__ in _UNREACHABLE:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            print(f"paperpost: error: cannot use the database ([database] url): {reason}",
                  file=sys.stderr)  # fmt: skip
            return 1
        raise


_UNREACHABLE = ("OperationalError", "InterfaceError")


if __name__ == "__main__":
    sys.exit(main())
