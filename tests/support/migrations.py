"""Throwaway Alembic revisions written into a temporary folder, so storage tests need no service."""

from __future__ import annotations

import textwrap
from pathlib import Path

TEMPLATE = '''\
"""{message}"""

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
    pass
'''

# A first revision with one table, enough for the database and migration tests.
ITEMS_TABLE = """\
op.create_table(
    "items",
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
)
"""


def write_revision(
    folder: Path,
    revision: str,
    upgrade: str,
    *,
    down_revision: str | None = None,
    message: str = "test revision",
) -> Path:
    """Writes folder/<revision>_test.py whose upgrade() runs the given Python statements."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{revision}_test.py"
    path.write_text(
        TEMPLATE.format(
            message=message,
            revision=revision,
            down_revision=down_revision,
            upgrade=textwrap.indent(upgrade, "    "),
        ),
        encoding="utf-8",
    )
    return path


def items_migrations(folder: Path) -> Path:
    """A migrations folder holding one revision, "0001", that creates table `items`."""
    write_revision(folder, "0001", ITEMS_TABLE, message="items")
    return folder
