"""Bulk session import: check every record first, then write with set-based upserts.

:class:`SessionImport` is what :meth:`SessionRegistry.import_records` runs inside its one
transaction. Nothing is written until every record has passed: its binding modes against the
configured GeoIP databases, its references (provider, IdP session), the IdP session's owner,
and the provider session's identifiers against its protocol handler
(:meth:`ProtocolHandler.identifier_problems`). Then the rows, merged in memory exactly as
one-by-one upserts would leave them (a session or provider session repeated in the input is
one row, updated by each later record), go out as ``INSERT ... ON CONFLICT DO UPDATE`` in
chunks of :data:`CHUNK` rows (SQLAlchemy sends each chunk as multi-row ``VALUES``), or on
PostgreSQL by binary ``COPY``.

The steps, one module each: ``stored`` reads what exists, ``session_rows`` and ``link_rows``
merge the records into rows (``merged``), ``writing`` sends them; ``session_import`` runs them.
"""

from orchestrator.importing.merged import ImportCounts
from orchestrator.importing.session_import import Progress, SessionImport
from orchestrator.importing.session_rows import GeoipDatabases
from orchestrator.importing.writing import CHUNK

__all__ = ["CHUNK", "GeoipDatabases", "ImportCounts", "Progress", "SessionImport"]
