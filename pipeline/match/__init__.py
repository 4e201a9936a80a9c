"""The matching engine: profiles × new papers → ranked items with reasons.

Public API: ``validate_query``, ``MatchSettings``, ``Matcher``, ``Decision`` and
``format_decision`` (see docs/matching.md).
"""

from __future__ import annotations

from pipeline.match.decision import Decision, NotInPeriod
from pipeline.match.engine import Matcher
from pipeline.match.explain import format_decision
from pipeline.match.query import QueryError, validate_query
from pipeline.match.result import MatchResult
from pipeline.match.settings import MatchSettings

__all__ = [
    "Decision",
    "MatchResult",
    "MatchSettings",
    "Matcher",
    "NotInPeriod",
    "QueryError",
    "format_decision",
    "validate_query",
]
