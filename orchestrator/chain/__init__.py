"""The audit trail's hash chain: sealing, signed checkpoints, verifying, exporting, purging.

The sealer hashes each committed record's canonical form
(:mod:`~orchestrator.chain.canonical`) and links the records into one chain per database,
in the order they were written, without making any writer wait or spend anything
(:mod:`~orchestrator.chain.sealing`); checkpoints sign the chain's head with the IdP's key
(:mod:`~orchestrator.chain.checkpoints`). ``docs/chain.md`` tells the design.
"""
