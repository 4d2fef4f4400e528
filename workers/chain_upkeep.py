"""The chain's upkeep in every worker: seal new audit records, sign a checkpoint when due.

The signing key is the IdP's OIDC key (``keys jwks`` publishes its public half): the key
ring of the worker's own OIDC handler, which the entry point loaded and started with the
other handlers, read when the first checkpoint is due. A worker that does not run the OIDC
protocol seals but signs no checkpoint. The chain's commands read the same keys from the
settings and never generate one (:func:`stored_checkpoint_keys`): only a worker's start
generates the default key, so a command run on another machine cannot sign with, nor
verify against, a key nobody publishes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from orchestrator.chain.checkpoints import CheckpointKeys
    from orchestrator.runtime import Runtime
    from orchestrator.settings import Settings
    from protocols import ProtocolHandler
    from protocols.oidc.keys import KeyRing

__all__ = ["ChainUpkeep", "handler_checkpoint_keys", "stored_checkpoint_keys"]

_log = structlog.get_logger("logout.chain")


def _ring_keys(ring: KeyRing) -> CheckpointKeys:
    from orchestrator.chain.checkpoints import CheckpointKeys

    return CheckpointKeys(ring.active, ring.jwks())


def handler_checkpoint_keys(handlers: Mapping[str, ProtocolHandler[Any]]) -> CheckpointKeys | None:
    """The started OIDC handler's active key (signs) and JWKS (verifies); None when the
    process runs no OIDC handler."""
    from protocols.oidc import OidcHandler

    handler = handlers.get(OidcHandler.protocol)
    return _ring_keys(handler.keys) if isinstance(handler, OidcHandler) else None


def stored_checkpoint_keys(settings: Settings) -> CheckpointKeys | None:
    """The workers' keys (``key_files`` of ``[protocols.oidc]`` and those generated into the
    data directory), read and never generated; None when there is none."""
    from orchestrator.handlers import build_handler
    from protocols.oidc import OidcHandler

    ring = build_handler(settings, OidcHandler, start=False).keys
    return _ring_keys(ring) if ring.load(generate=False) else None


@dataclass(slots=True)
class ChainUpkeep:
    """One periodic job of a worker: :meth:`run` every ``audit_seal_interval``."""

    runtime: Runtime
    _keys: CheckpointKeys | None = field(default=None)
    _read: bool = field(default=False)

    def keys(self) -> CheckpointKeys | None:
        """The runtime's OIDC keys, read at the first round (then kept); None: no OIDC
        handler in this process (said once)."""
        if not self._read:
            self.runtime.start_handlers()  # started already in a worker: a no-op then
            self._keys = handler_checkpoint_keys(self.runtime.handlers)
            self._read = True
            if self._keys is None:
                _log.warning(
                    "no OIDC handler in this worker: it seals the audit chain but signs no "
                    "checkpoint (enable the oidc protocol on at least one worker)"
                )
        return self._keys

    def run(self) -> None:
        """Seal (skipped while another round holds the seal lock), then sign a checkpoint
        when one is due and this process has the OIDC key."""
        from orchestrator.chain.checkpoints import checkpoint_if_due
        from orchestrator.chain.sealing import seal

        settings = self.runtime.settings
        seal(self.runtime.engine, wait=False)
        keys = self.keys()
        if keys is not None:
            interval = settings.audit_checkpoint_interval
            checkpoint_if_due(self.runtime.engine, lambda: keys, settings.issuer, interval)
