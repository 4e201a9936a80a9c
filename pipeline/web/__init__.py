"""Reader-facing web endpoints and their signed link tokens."""
