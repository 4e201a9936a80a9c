"""The migrations build exactly the schema the models declare, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pipeline.store import Store
from pipeline.store.rows import Base


def test_migrating_a_fresh_database_gives_the_models_schema(db_url: str) -> None:
    store = Store.open(db_url, auto_upgrade=True)
    try:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            diff = compare_metadata(context, Base.metadata)
        assert [d for d in diff if not _procrastinate(d)] == []
        indexes = {ix["name"] for ix in _inspect(store).get_indexes("feedback")}
        assert "ix_feedback_paper_id" in indexes
    finally:
        store.close()


def _inspect(store: Store):  # type: ignore[no-untyped-def]
    from sqlalchemy import inspect

    return inspect(store.engine)


def _procrastinate(diff: object) -> bool:
    """procrastinate's own tables (the runner's schema) are not Paperpost's models."""
    return "procrastinate" in repr(diff)
