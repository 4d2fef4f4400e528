"""The chain's upkeep in every worker: seal new audit records, sign a checkpoint when due.

The signing key is the IdP's OIDC key (``keys jwks`` publishes its public half), read when
the first checkpoint is due (not at start, which stays as fast as it was).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from orchestrator.chain.checkpoints import CheckpointKeys
    from orchestrator.settings import Settings

__all__ = ["ChainUpkeep", "checkpoint_keys"]


def checkpoint_keys(settings: Settings) -> CheckpointKeys:
    """The OIDC handler's active key (signs) and its JWKS (verifies)."""
    from orchestrator.chain.checkpoints import CheckpointKeys
    from orchestrator.handlers import build_handler
    from protocols.oidc import OidcHandler

    ring = build_handler(settings, OidcHandler).keys
    return CheckpointKeys(ring.active, ring.jwks())


@dataclass(slots=True)
class ChainUpkeep:
    """One periodic job: :meth:`run` every ``audit_seal_interval``."""

    settings: Settings
    engine: Engine
    _keys: CheckpointKeys | None = field(default=None)

    def keys(self) -> CheckpointKeys:
        """The keys, read when the first checkpoint is due (then kept)."""
        if self._keys is None:
            self._keys = checkpoint_keys(self.settings)
        return self._keys

    def run(self) -> None:
        from orchestrator.chain.checkpoints import checkpoint_if_due
        from orchestrator.chain.sealing import seal

        seal(self.engine)
        checkpoint_if_due(
            self.engine, self.keys, self.settings.issuer, self.settings.audit_checkpoint_interval
        )
