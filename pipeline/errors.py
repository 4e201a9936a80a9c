"""The error hierarchy.

One root, a few meaningful subclasses. Library errors are translated at the
edge (``raise SourceError(...) from exc``) so callers never need to know which
library failed, and every message names the thing that failed and what to do.
"""

from __future__ import annotations


class PaperpostError(Exception):
    """Root of every error Paperpost raises on purpose."""


class ConfigError(PaperpostError):
    """The configuration file is invalid. ``problems`` lists every problem found."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{path}: {len(problems)} {noun}:\n{lines}")


class StoreError(PaperpostError):
    """The database could not be opened, migrated or written."""


class SourceError(PaperpostError):
    """One source could not be fetched or parsed. Never fatal to a run."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"source {source!r}: {message}")


class QuerySyntaxError(PaperpostError, ValueError):
    """A profile query is not valid arXiv search syntax."""


class TemplateError(PaperpostError):
    """A digest template is missing or broken."""


class HeaderInjectionError(PaperpostError, ValueError):
    """A value bound for an email header carries CR, LF, controls or encoded-words."""


class TransportError(PaperpostError):
    """Base of delivery failures, classified by what the outbox must do next."""


class TransientDeliveryError(TransportError):
    """4xx or a temporary network problem for one message: retry later, same Message-ID."""


class PermanentDeliveryError(TransportError):
    """5xx for one message: mark it failed with the server's reply."""


class BatchAbortedError(TransportError):
    """The whole batch cannot proceed (auth rejected, server unreachable, TLS failure).

    Nothing is marked: every claimed row goes back to pending.
    """


class AmbiguousDeliveryError(TransportError):
    """The connection broke after the final '.': the server may have accepted the message."""


class ClaimLostError(PaperpostError):
    """The outbox row is no longer this sender's claim (the commit before the final '.'
    said no): the message was not delivered, and whoever holds the row now sends it."""


class EmbeddingError(PaperpostError):
    """The configured sentence-embedding model cannot be found or loaded (never downloaded)."""
