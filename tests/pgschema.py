"""A fresh PostgreSQL schema for one test or one benchmark run.

``fresh_schema()`` creates a schema with a random name on the server of ``base`` (by default
``$PAPERPOST_TEST_PG``, else the local ``test`` database), yields ``base`` with that schema as
the connection's ``search_path``, and drops the schema with everything in it afterwards.

Used by tests/conftest.py (the ``pg_url`` fixture) and by the benchmarks (bench/ingest.py,
bench/plan_writes.py, and bench/send_daemon.py for bench/send.py and bench/e2e.py), which put
the repository root on ``sys.path`` and import it as ``tests.pgschema``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PG_BASE = os.environ.get("PAPERPOST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def fresh_schema(base: str = PG_BASE, *, prefix: str = "t") -> Iterator[str]:
    """Yield ``base`` with a new schema ``<prefix>_<12 hex>`` as its search_path; drop it after."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield f"{base}?options=-csearch_path%3D{schema}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
