"""The core: types, the hash chain, commit rules, validation, the store protocols.

Nothing here imports a tier, the engine or a face."""
