"""The shared core of the store: engine, sessions, plain connections and error translation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pipeline.errors import StoreError
from pipeline.store.engine import IMMEDIATE


class StoreBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{IMMEDIATE: True})

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction, committed on success (BEGIN IMMEDIATE on SQLite)."""
        try:
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database write failed: {exc}") from exc

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A plain (Core) connection for reads: one transaction, rolled back at the end."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database read failed: {exc}") from exc

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """One write transaction on a plain (Core) connection, committed on success (BEGIN
        IMMEDIATE on SQLite). No ORM session: for the hot, single-statement writes."""
        try:
            with self._writer.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"database write failed: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()
