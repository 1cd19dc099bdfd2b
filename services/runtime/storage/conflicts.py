"""Inserting a row unless one with the same unique key exists, without a savepoint.

A savepoint around an INSERT to catch its IntegrityError costs two more statements (two
round trips on PostgreSQL) on every write, and an error that escapes it makes group commit
replay its whole batch. `ON CONFLICT DO NOTHING` (both SQLite and PostgreSQL) skips the row
instead; whether it was written is read from `RETURNING`, because psycopg reports a skipped
row's rowcount as -1 rather than 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def insert_new(
    conn: Connection, table: sa.TableClause, values: Mapping[str, object], returned: str
) -> bool:
    """Inserts `values` unless a row conflicts with one of the table's unique constraints;
    whether it inserted. `returned` names any column of the table (it is only read back)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    inserted = conn.execute(
        dialect.insert(table).values(**values).on_conflict_do_nothing().returning(table.c[returned])
    ).first()
    return inserted is not None
