"""The audit trail's hash chain: sealing, signed checkpoints, verifying, exporting, purging.

Each record carries the hash of its canonical form from the moment it is written
(:mod:`~orchestrator.chain.canonical`); the sealer links the committed records into one
chain per database, in the order they were written, without making any writer wait
(:mod:`~orchestrator.chain.sealing`); checkpoints sign the chain's head with the IdP's key
(:mod:`~orchestrator.chain.checkpoints`). ``docs/chain.md`` tells the design.
"""
