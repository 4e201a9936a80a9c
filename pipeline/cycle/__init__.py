"""The stage drivers the application layer (``pipeline.app``) runs: planning (schedule +
match -> outbox rows), composing (load, sign, render, build) and delivery.

The stage packages never import each other; these modules are where they meet.
"""
