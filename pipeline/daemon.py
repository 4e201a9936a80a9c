"""``paperpost daemon``: the scheduler and the web endpoints in one asyncio loop.

Wiring only: jobs call the cycle's stage composition (``pipeline.cycle``),
the web app gets a backend over the store, signals drive the life cycle.

- SIGTERM / SIGINT: stop claiming, let in-flight sends finish and be recorded
  for up to ``grace_seconds``, release the scheduler lease, stop the web
  server, exit 0. A second signal during the drain is logged and ignored.
- SIGHUP (``paperpost reload``): load the config again; an invalid one is
  rejected with every problem logged and the running config is kept. A valid
  one replaces subscribers (the suppression list still wins), sources, job
  intervals, link-signing keys and the admin token. ``database.url`` and the
  listen address need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import html
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from pipeline.app import App, UnknownReaderError, configured_clock, holder_name, utc_now
from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, PaperpostError
from pipeline.schedule.due import sources_due
from pipeline.schedule.scheduler import PeriodicJob, Scheduler
from pipeline.web.app import create_app
from pipeline.web.metrics import bounce_metrics, exposition, pipeline_metrics
from pipeline.web.readers import LinkedDigest, ManagedReader, ReaderForm, SubscribeSettings
from pipeline.web.tokens import TokenSigner

if TYPE_CHECKING:
    from pipeline.runner import Dispatcher

log = logging.getLogger("paperpost.daemon")

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    grace_seconds: float = 30.0
    lease_ttl: timedelta = timedelta(seconds=90)
    maintenance_every: timedelta = timedelta(hours=1)
    pid_file: Path | None = None  # default: var/paperpost.pid beside the config file


def default_pid_file(config_path: str | Path) -> Path:
    return Path(config_path).resolve().parent / "var" / "paperpost.pid"


@dataclass
class Stats:
    """Counters since the daemon started, for /metrics (names as in ``web.metrics.COUNTERS``)."""

    papers_ingested: int = 0
    digests_sent: int = 0
    digests_failed: int = 0
    digests_deferred: int = 0
    digests_ambiguous: int = 0
    source_failures: int = 0
    dispatch_runs: int = 0
    dispatch_seconds: float = 0.0
    send_seconds: float = 0.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns the process's signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        options: DaemonOptions = DaemonOptions(),
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.options = options
        self.clock: Clock = clock or utc_now
        self.holder = holder_name()
        self.core = App(config, clock=self.clock, holder=self.holder)
        self.store = self.core.store
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._dispatch_started = False
        # runner = "procrastinate": the dispatch tick plans, then defers delivery jobs that
        # `paperpost worker` processes run (pipeline/runner, docs/scaling.md).
        self.runner: Dispatcher | None = None
        if config.file.daemon.runner == "procrastinate":
            from pipeline.runner import Dispatcher

            self.runner = Dispatcher(config)
        self.scheduler = Scheduler(
            self._jobs(config),
            leases=self.store,
            holder=self.holder,
            clock=self.clock,
            lease_ttl=options.lease_ttl,
        )
        self.app = self._make_app(config)

    # -- jobs ------------------------------------------------------------------------------
    def _ingest_tick(self, config: Config) -> timedelta:
        ing = config.file.ingest.interval_minutes
        minutes = [s.interval_minutes or ing for s in config.sources if s.enabled] or [ing]
        return timedelta(minutes=min(minutes))

    def _jobs(self, config: Config) -> list[PeriodicJob]:
        every = timedelta(seconds=config.file.schedule.dispatch_every_seconds)
        return [
            PeriodicJob("ingest", self._ingest_tick(config), self._ingest),
            # Dispatch first runs right after the first ingest (see _ingest), so a fresh
            # start's digests contain the papers that ingest is about to store.
            PeriodicJob("dispatch", every, self._dispatch, run_at_start=False),
            PeriodicJob("maintenance", self.options.maintenance_every, self._maintenance),
            PeriodicJob("expire-signups", self.options.maintenance_every, self._expire_signups),
            # Retention: once a day (and at start), whatever the runner (it is the one clock).
            PeriodicJob("prune", timedelta(days=1), self._prune),
            *self._bounce_jobs(config),
        ]

    def _bounce_jobs(self, config: Config) -> list[PeriodicJob]:
        """Poll the bounce mailbox, when there is one ([bounces], docs/bounces.md)."""
        bounces = config.file.bounces
        if bounces is None:
            return []
        return [PeriodicJob("bounces", timedelta(minutes=bounces.poll_minutes), self._bounces)]

    async def _bounces(self) -> None:
        try:
            await asyncio.to_thread(self.core.process_bounces)
        except PaperpostError as exc:  # the mailbox is down: try again next time
            log.error("reading the bounce mailbox failed: %s", exc)

    async def _ingest(self) -> None:
        try:
            await self._ingest_due()
        finally:
            if not self._dispatch_started:
                self._dispatch_started = True
                self.scheduler.run_now("dispatch")

    async def _ingest_due(self) -> None:
        config, now = self.config, self.clock()
        default = config.file.ingest.interval_minutes
        intervals = {
            s.name: timedelta(minutes=s.interval_minutes or default)
            for s in config.sources
            if s.enabled
        }
        states = await asyncio.to_thread(self.core.source_states)
        last = {st.name: st.last_attempt for st in states}
        due = set(sources_due(intervals, last, tick=self._ingest_tick(config), now=now))
        if not due:
            return
        if self.runner is not None:
            # One ingest_source job per source, run by the workers. The first tick waits
            # for them (bounded), so the first dispatch plans with the papers just fetched.
            wait = None if self._dispatch_started else config.file.ingest.deadline_seconds + 60
            deferred = await self.runner.defer_ingest(self.core, sorted(due), wait=wait)
            log.info("ingest tick by %s: %d ingest jobs deferred", self.holder, deferred)
            return
        outcomes = await self.core.ingest(now=now, sources=due)
        self.stats.papers_ingested += sum(o.new for o in outcomes)
        self.stats.source_failures += sum(1 for o in outcomes if not o.ok)

    async def _dispatch(self) -> None:
        if self.stopping.is_set():
            return
        began = time.monotonic()
        if self.runner is not None:
            await self._dispatch_jobs(self.runner)
            self.stats.dispatch_runs += 1
            self.stats.dispatch_seconds += time.monotonic() - began
            return
        plan, report = await self.core.dispatch(stopping=self.stopping)
        self.stats.dispatch_runs += 1
        self.stats.dispatch_seconds += time.monotonic() - began
        self.stats.digests_sent += report.sent
        self.stats.send_seconds += report.send_seconds
        self.stats.digests_deferred += report.deferred
        self.stats.digests_failed += report.failed
        self.stats.digests_ambiguous += report.ambiguous
        log.info(
            "dispatch tick by %s: %d planned, %d sent, %d deferred, %d failed",
            self.holder,
            plan.planned,
            report.sent,
            report.deferred,
            report.failed,
        )

    async def _dispatch_jobs(self, runner: Dispatcher) -> None:
        """The clock's half with workers: decide who is due and defer their plan_block
        jobs (the workers fit the tick's matcher once each, checked against its input
        digest, write the rows and defer their delivery); then keep delivery jobs queued
        for rows of earlier ticks. Killed in between, the next tick or the workers' sweep
        defers what is missing."""
        plan = await runner.defer_plan(self.core, now=self.clock())
        deferred = await runner.defer_deliveries(self.core)
        log.info(
            "dispatch tick by %s: %d due readers, %d already in plan jobs, %d plan_block "
            "jobs deferred, %d of dead workers retried; %d delivery jobs deferred",
            self.holder,
            plan.due,
            plan.in_flight,
            plan.blocks,
            plan.retried,
            deferred,
        )

    async def _maintenance(self) -> None:
        alert = self.config.file.ingest.alert_after_failures
        for state in await asyncio.to_thread(self.core.source_states):
            if state.consecutive_failures >= alert:
                log.error(
                    "source %s has failed %d times in a row; last error: %s",
                    state.name,
                    state.consecutive_failures,
                    state.last_error,
                    extra={"source": state.name},
                )

    async def _expire_signups(self) -> None:
        """Delete sign-ups nobody confirmed within ``[web] confirm_hours``."""
        await asyncio.to_thread(self.core.expire_signups)

    async def _prune(self) -> None:
        """Delete the history older than ``[database] retention_days`` (App.prune)."""
        await asyncio.to_thread(self.core.prune)

    async def _follow_clock(self) -> None:
        """With a simulated clock (``[testing] clock_file``): each time it moves, renew
        (or take over) the lease, then run ingest and dispatch now (each still never
        overlaps with itself), so a harness's step is acted on without waiting for the
        next timer. Runs until cancelled."""
        last = self.clock()
        while not self.stopping.is_set():
            await asyncio.sleep(0.05)
            now = self.clock()
            if now == last:
                continue
            last = now
            await self.scheduler.renew_lease()
            self.scheduler.run_now("ingest")
            if self._dispatch_started:
                self.scheduler.run_now("dispatch")

    # -- web -------------------------------------------------------------------------------
    def _make_app(self, config: Config) -> Starlette:
        backend = DaemonWebBackend(self)
        web = config.file.web
        return create_app(
            backend,
            TokenSigner(config.secrets.link_keys),
            admin_token=config.secrets.admin_token,
            clock=self.clock,
            list_name=config.file.mail.list_name,
            readers=backend,
            subscribe=SubscribeSettings(
                enabled=web.subscribe,
                per_address_per_hour=web.subscribe_per_address_per_hour,
                per_client_per_hour=web.subscribe_per_client_per_hour,
                confirm_hours=web.confirm_hours,
                rate_limit_storage=web.rate_limit_storage,
            ),
        )

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point uvicorn serves; it follows the app across reloads."""
        await self.app(scope, receive, send)

    # -- life cycle ------------------------------------------------------------------------
    def request_stop(self, name: str) -> None:
        if self._stop_requested.is_set():
            log.warning("%s received while stopping; still draining", name)
            return
        log.warning("%s received: draining for up to %.0f s", name, self.options.grace_seconds)
        self._stop_requested.set()

    async def reload(self) -> bool:
        """Load the config file again; keep the running config if the new one is invalid."""
        path = self.config.path
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            log.error("reload rejected; the running config stays in force: %s", exc)
            return False
        if new.database_url != self.config.database_url:
            log.error("reload rejected: database.url changed; restart the daemon to switch")
            return False
        web_old, web_new = self.config.file.web, new.file.web
        if (web_old.listen_host, web_old.listen_port) != (web_new.listen_host, web_new.listen_port):
            log.warning("the new web listen address takes effect on restart")
        old = self.config
        try:
            self.core.reconfigure(new)
            await asyncio.to_thread(self.core.sync)
        except PaperpostError as exc:
            self.core.reconfigure(old)
            log.error("reload rejected: could not store the new subscribers: %s", exc)
            return False
        self.config = new
        self.app = self._make_app(new)
        self.scheduler.set_jobs(self._jobs(new))
        log.warning(
            "config reloaded from %s: %d subscribers, %d sources",
            path,
            len(new.file.subscribers),
            len(new.file.sources),
        )
        return True

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        reloads: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            task = loop.create_task(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        web = self.config.file.web
        listener = _listen(web.listen_host, web.listen_port)  # fails here, before any work
        server = _Server(
            uvicorn.Config(
                self.asgi,
                interface="asgi3",
                lifespan="off",
                access_log=False,
                log_level="warning",
                timeout_graceful_shutdown=max(1, int(self.options.grace_seconds)),
            )
        )
        await asyncio.to_thread(self.core.sync)
        if self.runner is not None:
            await self.runner.open()
        await self.scheduler.start()
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        # A simulated clock (testing only): act on each step at once, not at the next timer.
        watching = (
            asyncio.create_task(self._follow_clock())
            if self.config.file.testing.clock_file is not None
            else None
        )
        stop_wait = asyncio.create_task(self._stop_requested.wait())
        log.warning(
            "daemon %s started: web on http://%s:%d, %s the scheduler lease",
            self.holder,
            web.listen_host,
            listener.getsockname()[1],
            "holding" if self.scheduler.holds_lease else "standing by for",
        )
        await asyncio.wait({serving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if serving.done():  # the web server could not start (port taken, ...)
            log.error("the web server stopped unexpectedly; shutting down")
            code = 1
        self.stopping.set()
        if watching is not None:
            watching.cancel()
        drained = await self.scheduler.stop(grace=self.options.grace_seconds)
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await serving
        stop_wait.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if self.runner is not None:
            await self.runner.close()
        await asyncio.to_thread(self.core.close)
        log.warning(
            "daemon %s stopped (%s)",
            self.holder,
            "drained" if drained else "in-flight work cancelled after the grace period",
        )
        return code


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise PaperpostError(
            f"cannot listen on {host}:{port} ([web] listen_host / listen_port): {exc}"
        ) from exc


class DaemonWebBackend:
    """The web app's port over the store and the cycle; reads the daemon's current config."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon

    def unsubscribe(self, email: str, *, now: datetime) -> bool:
        return self._daemon.core.unsubscribe(email, now=now)

    def record_feedback(self, email: str, paper_id: str, signal: str, *, now: datetime) -> bool:
        return self._daemon.core.record_feedback(email, paper_id, signal, now=now)

    # The reader's own pages (web.readers.ReaderBackend).
    def request_signup(
        self, email: str, form: ReaderForm, *, now: datetime
    ) -> Callable[[], None] | None:
        return self._daemon.core.request_signup(email, form, now=now)

    def confirm_signup(self, email: str, nonce: str, *, now: datetime) -> bool:
        return self._daemon.core.confirm_signup(email, nonce, now=now)

    def managed_reader(self, email: str, *, now: datetime) -> ManagedReader | None:
        return self._daemon.core.managed_reader(email, now=now)

    def edit_reader(self, email: str, form: ReaderForm, *, now: datetime) -> bool:
        return self._daemon.core.edit_reader(email, form, now=now)

    def reset_overrides(self, email: str, *, now: datetime) -> bool:
        return self._daemon.core.reset_overrides(email, now=now)

    def pause(self, email: str, weeks: int, *, now: datetime) -> bool:
        return self._daemon.core.pause(email, weeks, now=now)

    def undo_feedback(self, email: str, paper_id: str, *, now: datetime) -> bool:
        return self._daemon.core.undo_feedback(email, paper_id, now=now)

    def resubscribe(self, email: str, *, now: datetime) -> bool:
        return self._daemon.core.resubscribe_reader(email, now=now)

    def export_reader(self, email: str) -> Mapping[str, object] | None:
        return self._daemon.core.export_reader(email)

    def erase_reader(self, email: str, *, now: datetime) -> bool:
        return self._daemon.core.erase_reader(email, now=now)

    def paper_title(self, paper_id: str) -> str | None:
        return self._daemon.core.paper_title(paper_id)

    def reader_email(self, subscriber_id: int) -> str | None:
        return self._daemon.core.reader_email(subscriber_id)

    def linked_digest(self, subscriber_id: int, delivery_id: int) -> LinkedDigest | None:
        return self._daemon.core.linked_digest(subscriber_id, delivery_id)

    def render_preview(self, email: str) -> str | None:
        try:
            upcoming = self._daemon.core.next_digest(email)
        except UnknownReaderError:
            return None
        if upcoming.html is None:  # a clearly marked page, never a digest that is not sent
            return (
                '<!doctype html><html lang="en"><head><meta charset="utf-8">'
                "<title>Nothing would be sent</title></head><body>"
                f"<p>Nothing would be sent to {html.escape(upcoming.email)} for "
                f"{html.escape(upcoming.period_key)}: {html.escape(upcoming.nothing or '')}.</p>"
                "</body></html>"
            )
        return upcoming.html

    def health(self) -> Mapping[str, object]:
        d = self._daemon
        try:
            outbox = d.core.outbox_counts()
            verdict = d.core.health()
        except Exception as exc:  # health reports, never raises
            return {"ok": False, "status": "down", "database": type(exc).__name__}
        # Degraded is not down: 200 with the reasons (docs/daemon.md, "Health").
        return {
            "ok": True,
            "status": verdict.status,
            "reasons": list(verdict.reasons),
            "database": "ok",
            "instance": d.holder,
            "scheduler_lease": d.scheduler.holds_lease,
            "running_jobs": d.scheduler.running_jobs,
            "stopping": d.stopping.is_set(),
            "outbox": outbox,
        }

    def metrics_text(self) -> str:
        d = self._daemon
        return exposition(
            pipeline_metrics(
                papers=d.core.paper_count(),
                outbox=d.core.outbox_counts(),
                source_failures={s.name: s.consecutive_failures for s in d.core.source_states()},
                lease_held=d.scheduler.holds_lease,
                counters=dataclasses.asdict(d.stats),
            )
            + bounce_metrics(**dataclasses.asdict(d.core.bounce_rates()))
        )


# -- process entry points ------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim_pid_file(path: Path) -> None:
    try:
        other = int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        other = 0
    if other and other != os.getpid() and _pid_alive(other):
        raise PaperpostError(
            f"another daemon (pid {other}) runs with this config ({path}); stop it first"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n", encoding="utf-8")


def options_from_config(config: Config) -> DaemonOptions:
    d = config.file.daemon
    return DaemonOptions(
        grace_seconds=d.grace_seconds,
        lease_ttl=timedelta(seconds=d.lease_seconds),
        maintenance_every=timedelta(minutes=d.maintenance_minutes),
        pid_file=config.path.parent / d.pid_file if d.pid_file else None,
    )


def run_daemon(config_path: str | Path, *, options: DaemonOptions | None = None) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit status."""
    config = load_config(config_path)
    options = options or options_from_config(config)
    pid_file = options.pid_file or default_pid_file(config.path)
    _claim_pid_file(pid_file)

    clock = configured_clock(config)  # [testing] clock_file: a simulated clock (testing only)

    async def main() -> int:
        return await Daemon(config, options=options, clock=clock).run()

    try:
        return asyncio.run(main())
    finally:
        with contextlib.suppress(OSError):
            if pid_file.read_text(encoding="utf-8").strip() == str(os.getpid()):
                pid_file.unlink()


def signal_reload(config_path: str | Path, *, pid_file: Path | None = None) -> int:
    """Send SIGHUP to the daemon running with this config (found by its pid file)."""
    # The daemon would reject an invalid config and keep the running one; say so here, with
    # every problem, and exit non-zero, so a deploy script stops instead of trusting a reload.
    # (ConfigError goes to the CLI's catch-all.) Secrets are not required here: the daemon's
    # environment (a systemd EnvironmentFile) is not the operator's shell.
    config = load_config(config_path, secrets=False)
    if pid_file is None:
        pid_file = options_from_config(config).pid_file
    path = pid_file or default_pid_file(config_path)
    try:
        pid = int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        print(f"paperpost: no running daemon found (cannot read {path})", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"paperpost: the daemon (pid {pid}) in {path} is not running", file=sys.stderr)
        return 1
    print(f"asked the daemon (pid {pid}) to reload its config; see its log for the result")
    return 0
