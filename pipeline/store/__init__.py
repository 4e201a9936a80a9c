"""The store: SQLAlchemy 2 over SQLite (default) or PostgreSQL, schema by Alembic.

Only this package sees ORM rows; callers get domain values and small dataclasses.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from pipeline.errors import StoreError
from pipeline.store import migrate
from pipeline.store.deliveries import Delivery, DeliveryItem, DeliveryStore, PaperCache
from pipeline.store.engine import make_engine
from pipeline.store.lifecycle import FeedbackMark, LifecycleStore, ReaderRecord, Signup
from pipeline.store.ops import OpsStore, Run
from pipeline.store.outbox import OutboxStore
from pipeline.store.papers import PaperStore, SaveStats, SourceState
from pipeline.store.planning import PlannedDelivery, PlannedItem, PlanningStore
from pipeline.store.port import Outbox, OutboxEntry
from pipeline.store.retention import PruneCounts, RetentionStore
from pipeline.store.subscribers import SubscriberState, SyncStats
from pipeline.store.suppression import BounceRates, SuppressionStore, address_hash

__all__ = [
    "BounceRates",
    "Delivery",
    "DeliveryItem",
    "FeedbackMark",
    "Outbox",
    "OutboxEntry",
    "PaperCache",
    "PlannedDelivery",
    "PlannedItem",
    "PruneCounts",
    "ReaderRecord",
    "Run",
    "SaveStats",
    "Signup",
    "SourceState",
    "Store",
    "SubscriberState",
    "SyncStats",
    "address_hash",
]


class Store(
    PaperStore,
    LifecycleStore,  # a SubscriberStore with the reader's own actions
    PlanningStore,
    OutboxStore,
    DeliveryStore,
    OpsStore,
    SuppressionStore,
    RetentionStore,
):
    """All persistent state. One instance per process; thread-safe like its engine."""

    @classmethod
    def open(cls, url: str, *, auto_upgrade: bool | None = None) -> Store:
        """Open the database at ``url``.

        A fresh SQLite file is migrated automatically (that is what makes the demo one
        command); any other database behind the newest migration is an error that says
        to run ``paperpost db upgrade``. ``auto_upgrade`` overrides that choice.
        """
        parsed = make_url(url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        fresh_file = is_sqlite and (
            not parsed.database
            or parsed.database == ":memory:"
            or not Path(parsed.database).exists()
        )
        engine = make_engine(url)
        store = cls(engine)
        upgrade = fresh_file if auto_upgrade is None else auto_upgrade
        current = migrate.current_revision(engine)
        head = migrate.head_revision()
        if current != head:
            if upgrade:
                migrate.upgrade(engine)
            else:
                tables = inspect(engine).get_table_names()
                if current is not None:
                    state = f"at revision {current}"
                else:
                    state = "empty" if not tables else "without a Paperpost schema"
                engine.dispose()
                raise StoreError(
                    f"the database at {parsed.render_as_string(hide_password=True)} is {state}, "
                    f"the code needs revision {head}: run `paperpost db upgrade`"
                )
        return store

    def upgrade(self) -> None:
        migrate.upgrade(self.engine)

    def revision(self) -> str | None:
        return migrate.current_revision(self.engine)
