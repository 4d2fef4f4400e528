"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from orchestrator.store import Base
from orchestrator.store.engine import make_engine
from orchestrator.store.migrate import upgrade


def test_migrated_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    """After `db upgrade`, autogenerate finds nothing to add, drop or change."""
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "render_as_batch": True}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
