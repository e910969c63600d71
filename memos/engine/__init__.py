"""The engine, the handles over it (embedded and HTTP) and the operation declarations."""
