"""Counting the SQL statements the service sends, at the driver's edge (SQLAlchemy's
`before_cursor_execute` event on the engine): what a "statements per operation" test reads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from service.db.engine import Database


@contextmanager
def sent_statements(database: Database) -> Iterator[list[str]]:
    """The statements sent to `database` while the block runs, first word upper-cased
    (SELECT, UPDATE, INSERT, BEGIN, ...), in order."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    engine = database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
