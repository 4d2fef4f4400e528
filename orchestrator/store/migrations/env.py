"""Alembic environment: runs against the connection ``orchestrator.store.migrate`` hands it.

SQLite: one transaction, begun explicitly, holds the whole run, so that a migration that
fails (a refused downgrade) undoes the DDL of those before it too, as on PostgreSQL; Python's
driver would begin only at the first DML and commit each DDL before it on its own. And
foreign keys are off meanwhile: batch mode changes a table by copying it and dropping the old
one, and with foreign keys on, that ``DROP TABLE`` deletes every row referencing it through
``ON DELETE CASCADE`` (dropping a column of ``idp_sessions`` emptied ``provider_sessions``).
The pragma has no effect inside a transaction, so it is set before the run begins and after
it ends; a run that would leave a row pointing nowhere is rolled back.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from orchestrator.store.models import Base

connection: Connection = context.config.attributes["connection"]
sqlite = connection.dialect.name == "sqlite"


def _migrate() -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if not sqlite:
    _migrate()
else:
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.exec_driver_sql("BEGIN")  # the driver would begin at the first DML only
    try:
        _migrate()
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"migrating would leave rows pointing nowhere: {broken[:5]}")
    except BaseException:
        connection.rollback()
        raise
    else:
        connection.commit()
    finally:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
