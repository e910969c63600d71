"""Data the tests read, carried by the repository (see README.md)."""
