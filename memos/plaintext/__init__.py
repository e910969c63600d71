"""The plaintext tier: each cube's vector index, hybrid search and re-encoding."""
