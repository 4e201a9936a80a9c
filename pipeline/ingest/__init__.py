"""Ingest: fetch listings, parse them with the source adapters, merge and store papers."""
